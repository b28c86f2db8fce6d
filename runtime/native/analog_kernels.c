/* Fused element-wise kernels of the analog tile periphery (CPU).

   Eager PyTorch spends most of an emulated inference in element-wise passes and Gaussian sampling
   (bench/RESULTS-runtime.md); these kernels do the DAC step in one pass and the whole ADC tail
   (output noise, ADC rounding and bound, digital rescale, bias, row-block accumulation) in another,
   with a counter-based Gaussian generator, so the result of element i depends only on (key, i):
   identical for any split of the work across threads.

   Built at first use by runtime/native/__init__.py with the machine's C compiler. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bijective 32-bit integer hash (Chris Wellons' "triple32" constants: very low avalanche bias). */
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 17; x *= 0xed5ad4bbU;
    x ^= x >> 11; x *= 0xac4c1b51U;
    x ^= x >> 15; x *= 0x31848babU;
    x ^= x >> 14;
    return x;
}

/* ln(u) for u > 0, branch-free so the loop vectorizes: u = m 2^e with m in [sqrt(1/2), sqrt(2)),
   ln m = t p(t), t = m - 1, p a degree-7 least-squares fit on Chebyshev nodes (|error| < 6e-8). */
static inline float log_pos(float u) {
    uint32_t b;
    memcpy(&b, &u, 4);
    int32_t e = (int32_t)((b >> 23) & 255u) - 127;
    uint32_t mb = (b & 0x7fffffu) | 0x3f800000u;
    float m;
    memcpy(&m, &mb, 4);
    int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e += big;
    float t = m - 1.0f;
    float p = 0.9999999425f + t * (-0.5000036309f + t * (0.3333511414f + t * (-0.2497007169f +
              t * (0.1989856505f + t * (-0.172470133f + t * (0.162341898f + t * -0.1013405675f))))));
    return (float)e * 0.69314718f + t * p;
}

/* Box-Muller from one hash per pair: u1 and u2 are its two 16-bit halves, centred in their cells, so
   u1 > 0 and |z| <= sqrt(-2 ln(2^-17)) = 4.86 (the tail beyond has probability 1.2e-6).
   z[0..7] are the cos branch and z[8..15] the sin branch of pairs base_pair .. base_pair + 7.
   sin / cos of 2 pi u2 via the half angle h in (-pi/2, pi/2): Taylor polynomials to h^9 and h^10 there
   (errors < 4e-6 and 5e-7), then sin 2h = 2 sin h cos h, cos 2h = 1 - 2 sin^2 h. */
static inline void normals16(uint32_t key_a, uint32_t key_b, uint64_t base_pair, float *z) {
    for (int k = 0; k < 8; k++) {
        uint32_t h32 = mix32(((uint32_t)(base_pair + (uint64_t)k) + key_a) ^ key_b);
        float u1 = ((float)(h32 & 0xffffu) + 0.5f) * (1.0f / 65536.0f);
        float u2 = ((float)(h32 >> 16) + 0.5f) * (1.0f / 65536.0f);
        float r = sqrtf(-2.0f * log_pos(u1));
        float h = 3.14159265f * (u2 - 0.5f), h2 = h * h;
        float sh = h * (1.0f + h2 * (-1.0f / 6 + h2 * (1.0f / 120 + h2 * (-1.0f / 5040 + h2 * (1.0f / 362880)))));
        float ch = 1.0f + h2 * (-0.5f + h2 * (1.0f / 24 + h2 * (-1.0f / 720 + h2 * (1.0f / 40320 +
                   h2 * (-1.0f / 3628800)))));
        z[k] = r * (1.0f - 2.0f * sh * sh);
        z[k + 8] = r * (2.0f * sh * ch);
    }
}

enum { GROUP = 4096, PARALLEL_MIN = 1 << 15 };

/* DAC: out = clamp(round_half_even(x * mult), -lim, lim) on [start, end). */
void acq_dac(const float *x, float *out, int64_t start, int64_t end, float mult, float lim) {
#pragma omp parallel for schedule(static) if (end - start > PARALLEL_MIN)
    for (int64_t i = start; i < end; i++) {
        float v = rintf(x[i] * mult);
        v = v > lim ? lim : v;
        out[i] = v < -lim ? -lim : v;
    }
}

/* DAC into a channel slice: x is channel-fastest (positions x C); out (positions x (c1 - c0)) gets
   clamp(round_half_even(x[p, c] * mult), -lim, lim) for c in [c0, c1): a row block's own input. */
void acq_dac_slice(const float *x, float *out, int64_t positions, int64_t C, int64_t c0, int64_t c1,
                   float mult, float lim) {
    int64_t w = c1 - c0;
#pragma omp parallel for schedule(static) if (positions * w > PARALLEL_MIN)
    for (int64_t p = 0; p < positions; p++) {
        const float *xr = x + p * C + c0;
        float *o = out + p * w;
        for (int64_t c = 0; c < w; c++) {
            float v = rintf(xr[c] * mult);
            v = v > lim ? lim : v;
            o[c] = v < -lim ? -lim : v;
        }
    }
}

/* z[j] = the standard normal of element g0 + j of stream (key_a, key_b), j < n; g0 a multiple of 16.
   Element i comes from pair (i / 16) * 8 + i % 8 (cos or sin branch by i % 16 < 8), so its value does not
   depend on how a range is split. z must hold n rounded up to 16. */
static void normals_at(float *z, int64_t g0, int64_t n, uint32_t key_a, uint32_t key_b) {
    for (int64_t j = 0; j < n; j += 16) {
        normals16(key_a, key_b, (uint64_t)((g0 + j) / 2), z + j);
    }
}

/* Standard normals of elements [start, end) of stream (key_a, key_b) into z[start..end); start % 16 == 0. */
void acq_normal(float *z, int64_t start, int64_t end, uint32_t key_a, uint32_t key_b) {
    float buf[16];
    int64_t full = start + (end - start) / 16 * 16;
#pragma omp parallel for schedule(static) if (full - start > PARALLEL_MIN)
    for (int64_t j = start; j < full; j += 1024) {
        int64_t m = full - j < 1024 ? full - j : 1024;
        normals_at(z + j, j, m, key_a, key_b);
    }
    if (full < end) {
        normals_at(buf, full, 16, key_a, key_b);
        memcpy(z + full, buf, (size_t)(end - full) * sizeof(float));
    }
}


/* ADC tail on channel-fastest data (positions x C) over positions [p0, p1):
     v = y + noise_sd N(0, 1)   (the normal of element i is acq_normal's, whatever the split)
     if lim > 0: v = clamp(round_half_even(v), -lim, lim)
     out = (accumulate ? out : (bias ? bias[c] : 0)) + v scale[c] (+ residual), then max(out, 0) if relu
   Works through groups of about GROUP elements so the noise stays in L1, groups spread over the
   OpenMP threads (torch's own runtime when loaded after torch: one thread pool for both). */
void acq_tail(const float *y, float *out, int64_t p0, int64_t p1, int64_t C, const float *scale,
              const float *bias, int accumulate, float noise_sd, float lim, const float *residual,
              int relu, uint32_t key_a, uint32_t key_b) {
    int64_t per = GROUP / C > 0 ? GROUP / C : 1;
    int64_t ngroups = (p1 - p0 + per - 1) / per;
    int quant = lim > 0.0f;
    float sd = noise_sd > 0.0f ? noise_sd : 0.0f;
    size_t scratch_n = (size_t)(per * C + 32);
#pragma omp parallel if ((p1 - p0) * C > PARALLEL_MIN)
    {
        float stack_buf[GROUP + 32];
        float *scratch = scratch_n <= GROUP + 32 ? stack_buf : (float *)malloc(scratch_n * sizeof(float));
        if (sd == 0.0f) memset(scratch, 0, scratch_n * sizeof(float));  /* the noise of a noiseless tail */
#pragma omp for schedule(static)
        for (int64_t g = 0; g < ngroups; g++) {
            int64_t q0 = p0 + g * per;
            int64_t q1 = q0 + per < p1 ? q0 + per : p1;
            int64_t i0 = q0 * C;
            const float *z = scratch;
            if (sd > 0.0f) {
                int64_t g0 = i0 / 16 * 16;
                normals_at(scratch, g0, i0 - g0 + (q1 - q0) * C, key_a, key_b);
                z = scratch + (i0 - g0);
            }
            for (int64_t q = 0; q < q1 - q0; q++) {
                const float *yr = y + i0 + q * C;
                float *o = out + i0 + q * C;
                const float *zr = z + q * C;
                const float *rr = residual ? residual + i0 + q * C : zr;  /* zr: never added */
                float rs = residual ? 1.0f : 0.0f;
                for (int64_t c = 0; c < C; c++) {
                    float a = yr[c] + sd * zr[c];
                    if (quant) {
                        a = rintf(a);
                        a = a > lim ? lim : a;
                        a = a < -lim ? -lim : a;
                    }
                    float base = accumulate ? o[c] : (bias ? bias[c] : 0.0f);
                    float r = base + a * scale[c] + rs * rr[c];
                    o[c] = relu && r < 0.0f ? 0.0f : r;
                }
            }
        }
        if (scratch != stack_buf) free(scratch);
    }
}
