/* Coverage hooks for fuzzing a sanitized C extension under atheris (fuzz/native).
 *
 * libasan.so, which must be preloaded, defines libFuzzer's coverage hooks
 * (__sanitizer_cov_*) as weak no-op stubs; being loaded first, they shadow atheris's
 * libFuzzer (loaded later, privately, by Python's import), so libFuzzer would see no
 * coverage at all. Preloaded before libasan, these strong definitions forward each hook
 * to atheris's libFuzzer (FUZZ_LIBFUZZER names its core module). Each forward is a
 * tail call, so libFuzzer still sees its caller's address (the PC it records).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *target(const char *name) {
    static void *core;
    if (core == NULL) {
        const char *path = getenv("FUZZ_LIBFUZZER");
        core = path ? dlopen(path, RTLD_LAZY) : NULL;
        if (core == NULL) {
            fprintf(stderr, "covshim: cannot open FUZZ_LIBFUZZER: %s\n", dlerror());
            abort();
        }
    }
    void *fn = dlsym(core, name);
    if (fn == NULL) {
        fprintf(stderr, "covshim: %s not in libFuzzer\n", name);
        abort();
    }
    return fn;
}

#define HOOK(name, params, args)                                  \
    void name params {                                            \
        static void(*fn) params;                                  \
        if (fn == NULL) fn = (void(*) params)target(#name);       \
        fn args;                                                  \
    }

HOOK(__sanitizer_cov_8bit_counters_init, (char *a, char *b), (a, b))
HOOK(__sanitizer_cov_pcs_init, (const uintptr_t *a, const uintptr_t *b), (a, b))
HOOK(__sanitizer_cov_trace_pc_indir, (uintptr_t a), (a))
HOOK(__sanitizer_cov_trace_pc_guard, (uint32_t *a), (a))
HOOK(__sanitizer_cov_trace_pc_guard_init, (uint32_t *a, uint32_t *b), (a, b))
HOOK(__sanitizer_cov_trace_cmp1, (uint8_t a, uint8_t b), (a, b))
HOOK(__sanitizer_cov_trace_cmp2, (uint16_t a, uint16_t b), (a, b))
HOOK(__sanitizer_cov_trace_cmp4, (uint32_t a, uint32_t b), (a, b))
HOOK(__sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
HOOK(__sanitizer_cov_trace_const_cmp1, (uint8_t a, uint8_t b), (a, b))
HOOK(__sanitizer_cov_trace_const_cmp2, (uint16_t a, uint16_t b), (a, b))
HOOK(__sanitizer_cov_trace_const_cmp4, (uint32_t a, uint32_t b), (a, b))
HOOK(__sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
HOOK(__sanitizer_cov_trace_switch, (uint64_t a, uint64_t *b), (a, b))
HOOK(__sanitizer_cov_trace_div4, (uint32_t a), (a))
HOOK(__sanitizer_cov_trace_div8, (uint64_t a), (a))
HOOK(__sanitizer_cov_trace_gep, (uintptr_t a), (a))

/* gcc's trace-cmp also reports floating-point comparisons, which libFuzzer has no
 * hook for: ignored. */
void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a, (void)b; }
