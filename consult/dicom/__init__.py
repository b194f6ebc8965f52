"""DICOM on the wire and on disk: reading untrusted headers, Part 10, our SCU side."""
