"""The DICOM receiver: C-ECHO and C-STORE SCP (pynetdicom)."""

from consult.receiver.scp import Receiver

__all__ = ["Receiver"]
