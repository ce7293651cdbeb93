/* pk_omp.h (private): the few OpenMP entry points the kernels call. Declared here instead of
 * including omp.h, whose Debian location depends on the LLVM version; -fopenmp emits the rest. */
#ifndef PK_OMP_H
#define PK_OMP_H
int omp_get_max_threads(void);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
void omp_set_num_threads(int n);
void kmp_set_blocktime(int ms);
#endif
