"""The SDK turns every transport failure into a CetiError: a connection reset mid-request is no traceback."""

import socket
import struct
import threading

import pytest

from ceti.client import CetiError, Client


def test_a_connection_reset_by_the_server_is_a_clean_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def reset_each(n: int) -> None:  # read the request, then reset the connection (a server killed mid-answer)
        for _ in range(n):
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=reset_each, args=(1,), daemon=True)
    thread.start()
    try:
        with pytest.raises(CetiError) as err:
            Client(f"http://127.0.0.1:{port}", timeout_s=5, retries=0).health()
        assert err.value.status == 0 and "cannot reach the server" in err.value.message
    finally:
        thread.join(5)
        listener.close()
