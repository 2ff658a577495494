"""What the real wrapper does when libamd_smi.so cannot be loaded."""

import ctypes

_libraries = {}
try:
    _libraries["libamd_smi.so"] = ctypes.CDLL("/nonexistent/libamd_smi.so")
except OSError as error:
    print(error)
    print("Unable to find amdsmi library try installing amd-smi-lib from your package manager")

amdsmi_init = _libraries["libamd_smi.so"].amdsmi_init
