"""pivtool: PIV smart cards and YubiKeys made ready for Microsoft Entra certificate-based auth."""

__version__ = "0.1.0"
