"""Trace loaders: columns by header name, bad rows reported with file and line, skip vs reject."""

from __future__ import annotations

from pathlib import Path

import pytest

from ceti.sim.trace import TraceError, TraceRowRejected, load_nodes, load_pods

POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_columns_by_name_in_any_order_and_optional_ones_missing(tmp_path: Path) -> None:
    pods = write(
        tmp_path,
        "pods.csv",
        "gpu_milli,name,num_gpu,memory_mib,cpu_milli\n1000,p0,2,1024,8000\n460,p1,1,512,6000\n0,p2,0,256,4000\n",
    )
    load = load_pods(pods)
    assert [(p.name, p.cpu_milli, p.memory_mib, p.gpu_count, p.gpu_milli) for p in load.rows] == [
        ("p0", 8000, 1024, 2, 1000),
        ("p1", 6000, 512, 1, 460),
        ("p2", 4000, 256, 0, 0),
    ]
    assert load.rows[1].is_gpu_share and not load.rows[0].is_gpu_share
    assert load.errors == []


def test_full_header_and_gpu_spec(tmp_path: Path) -> None:
    pods = write(
        tmp_path, "pods.csv", POD_HEADER + "\np0,12000,16384,1,1000,V100M16|V100M32,LS,Running,0,10,0\n"
    )
    (pod,) = load_pods(pods).rows
    assert pod.gpu_models == frozenset({"V100M16", "V100M32"}) and pod.gpu_spec == "V100M16|V100M32"
    assert pod.qos == "LS" and pod.deletion_time == 10


def test_missing_required_column_is_an_error(tmp_path: Path) -> None:
    pods = write(tmp_path, "pods.csv", "name,cpu_milli,memory_mib,num_gpu\np0,1,1,0\n")
    with pytest.raises(TraceError, match=r"pods.csv:1: .*gpu_milli"):
        load_pods(pods, on_error="skip")


BAD_PODS = (
    POD_HEADER
    + "\n"
    + "good,1000,100,1,500,,LS,Running,0,1,0\n"  # line 2
    + "neg,-1000,100,0,0,,LS,Running,0,1,0\n"  # line 3: negative size
    + "model,1000,100,1,1000,V100M16|H900,LS,Running,0,1,0\n"  # line 4: unknown GPU model
    + "text,abc,100,0,0,,LS,Running,0,1,0\n"  # line 5: non-numeric
    + "short,1000,100\n"  # line 6: missing columns
    + "empty,,100,0,0,,LS,Running,0,1,0\n"  # line 7: missing value
    + "ok2,2000,100,2,1000,,LS,Running,0,1,0\n"  # line 8
)


def test_skip_reports_every_bad_row_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", BAD_PODS)
    load = load_pods(path, on_error="skip")
    assert [p.name for p in load.rows] == ["good", "ok2"]
    by_line = {e.line: e for e in load.errors}
    assert sorted(by_line) == [3, 4, 5, 6, 7]
    assert all(e.path.endswith("bad.csv") for e in load.errors)
    assert "negative" in by_line[3].message
    assert "H900" in by_line[4].message
    assert "not a number" in by_line[5].message
    assert "fields" in by_line[6].message
    assert "missing" in by_line[7].message
    assert str(by_line[4]).startswith(str(path) + ":4:")


def test_reject_raises_at_the_first_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", BAD_PODS)
    with pytest.raises(TraceRowRejected, match=r"bad.csv:3: .*negative") as info:
        load_pods(path, on_error="reject")
    assert info.value.error.line == 3


def test_node_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nodes.csv",
        "model,sn,gpu,memory_mib,cpu_milli\nP100,n0,2,262144,64000\n,n1,0,262144,32000\n"
        "H900,n2,8,1,1\nT4,n3,-2,1,1\nT4,n0,2,1,1\n",
    )
    load = load_nodes(path, on_error="skip")
    assert [(n.name, n.gpu_count, n.gpu_model) for n in load.rows] == [("n0", 2, "P100"), ("n1", 0, "")]
    assert [e.line for e in load.errors] == [4, 5, 6]
    assert "unknown GPU model" in load.errors[0].message
    assert "negative" in load.errors[1].message
    assert "duplicate" in load.errors[2].message


def test_inconsistent_gpu_requests_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,0,500\nb,1,1,2,500\nc,1,1,1,1500\nd,1,1,1,0\n",
    )
    load = load_pods(path, on_error="skip")
    assert load.rows == [] and [e.line for e in load.errors] == [2, 3, 4, 5]


def test_shipped_trace_files_load_cleanly() -> None:
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-openb-2023"
    if not data.is_dir():
        pytest.skip("openb trace not present")
    nodes = load_nodes(data / "openb_node_list_gpu_node.csv")
    assert len(nodes.rows) == 1213 and sum(n.gpu_count for n in nodes.rows) == 6212
    pods = load_pods(data / "openb_pod_list_multigpu50.csv")
    assert len(pods.rows) == 9061 and not pods.errors
