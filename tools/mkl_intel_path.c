/* MKL chooses its kernels by the CPU's vendor as well as by its instruction set. On a CPU that is not
 * Intel's it runs its generic code path, whatever MKL_ENABLE_INSTRUCTIONS says, and that path sums in
 * another order: the same notebook then trains to other last digits on an AMD EPYC than on an Intel Xeon
 * (README, "Two torch threads"). Preloaded into nbval's kernel by `make test` (LD_PRELOAD), this answers
 * MKL's vendor check with "Intel", so both vendors run the kernels MKL_ENABLE_INSTRUCTIONS=AVX2 selects.
 * The Makefile preloads it only on CPUs that have AVX2 and FMA, the instructions those kernels use.
 * The well-known workaround for MKL on AMD CPUs; torch's wheels export the symbol from libtorch_cpu.so. */
int mkl_serv_intel_cpu_true(void) { return 1; }
