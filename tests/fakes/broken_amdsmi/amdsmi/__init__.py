"""The amdsmi package installed without its native library, as it behaves on import.

Its generated amdsmi_wrapper.py tries ctypes.CDLL("libamd_smi.so"), prints the OSError and a hint to
stdout, and then fails with KeyError on the first `_libraries['libamd_smi.so']` lookup.
"""

from .amdsmi_wrapper import amdsmi_init  # noqa: F401
