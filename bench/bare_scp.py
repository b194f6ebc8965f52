"""Baseline for bench/ingest.py: a bare pynetdicom storage SCP that writes each dataset to a
file (file meta + the bytes as received), with pynetdicom's defaults otherwise. This is
the "Storage SCP" example of pynetdicom's documentation, nothing more.

usage: python bench/bare_scp.py PORT OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt


def main() -> None:
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)

    def handle_store(event: Any) -> int:
        path = out / str(event.request.AffectedSOPInstanceUID)
        with path.open("wb") as fh:
            fh.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(fh, event.file_meta)
            fh.write(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="BARE")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    print("ready", flush=True)
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle_store)])


if __name__ == "__main__":
    main()
