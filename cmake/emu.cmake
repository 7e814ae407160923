# PLACEHOLDER: the _cuda_emu module (CUDA kernels on the CPU emulator).
message(FATAL_ERROR "DLKERN_EMU: the emulator is not written yet")
