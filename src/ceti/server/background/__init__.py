"""Background loops of the server, one file per loop."""


def yield_to_requests(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one): when the cores are busy, a
    request thread runs before a scheduling round or a sweep, which are never in a hurry to the millisecond."""
    import os
    import threading

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the normal priority
        pass
