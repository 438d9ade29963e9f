/* Elementwise math shared by the C (CPU) and CUDA kernels of exprvm.
 *
 * Every function here is branch-free straight-line code over one element so
 * that gcc can vectorize the calling loop (AVX2) and nvcc can inline it into a
 * grid-stride loop.  We do not call libm's expf/tanhf/log1pf: gcc only
 * vectorizes those under -ffast-math, which also throws away NaN/Inf
 * semantics.  Instead exp is Cody-Waite range reduction plus a polynomial, and
 * tanh, sigmoid, expm1, log1p and softplus are built on it with explicit
 * selects for NaN, +-Inf, +-0 and overflow/underflow, matching numpy.
 *
 * Derivatives take (x, ans, g) -- input, forward result, upstream gradient --
 * and return the gradient with respect to x.
 *
 * NOTE: the polynomials (Taylor series, and fitted ones for float32 exp and
 * tanh) stay below ~0.3 ulp on the reduced interval; the max error measured
 * against numpy is documented in tests/test_kernels_c.py.
 */
#ifndef EV_MATH_H
#define EV_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define EV_HD __host__ __device__ __forceinline__
#else
#define EV_HD static inline
#endif

/* ---- bit casts (memcpy is the defined way in C and host C++) ---------- */

EV_HD int32_t evm__f2i(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_int(f);
#else
    int32_t i; memcpy(&i, &f, sizeof i); return i;
#endif
}

EV_HD float evm__i2f(int32_t i) {
#if defined(__CUDA_ARCH__)
    return __int_as_float(i);
#else
    float f; memcpy(&f, &i, sizeof f); return f;
#endif
}

EV_HD int64_t evm__d2i(double d) {
#if defined(__CUDA_ARCH__)
    return __double_as_longlong(d);
#else
    int64_t i; memcpy(&i, &d, sizeof i); return i;
#endif
}

EV_HD double evm__i2d(int64_t i) {
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(i);
#else
    double d; memcpy(&d, &i, sizeof d); return d;
#endif
}

/* ---- constants --------------------------------------------------------- */

/* Adding then subtracting 1.5*2^(mantissa bits) rounds to the nearest
 * integer without a float->int conversion (AVX2 has none for int64). */
#define EVM_ROUND_F 12582912.0f
#define EVM_ROUND_D 6755399441055744.0
#define EVM_LOG2E_F 1.44269504f
#define EVM_LOG2E_D 1.4426950408889634
/* ln2 = HI + LO where HI has few enough significant bits that n*HI is exact
 * for every n the reduction produces (Cody-Waite). */
#define EVM_LN2HI_F 0.693115234375f
#define EVM_LN2LO_F 3.19461849e-05f
#define EVM_LN2HI_D 0.69314718036912382
#define EVM_LN2LO_D 1.9082149292705877e-10
/* Bit patterns of sqrt(1/2): log1p splits 1+x as 2^k * m, m in [sqrt(1/2), sqrt(2)). */
#define EVM_SQRTH_BITS_F 0x3f3504f3u
#define EVM_SQRTH_BITS_D 0x3fe6a09e667f3bcdULL

/* ---- exp core ---------------------------------------------------------- */

/* Reduce x = n*ln2 + r with |r| <= ln2/2 and return q = e^r - 1, with n both
 * as a float and as an integer.  x must already be clamped to a finite range
 * (|n| < 2^22); the integer comes out of the rounding trick for free. */
EV_HD float evm__expq_f32(float x, float* n_out, int32_t* ni_out) {
    float t = x * EVM_LOG2E_F + EVM_ROUND_F;
    float n = t - EVM_ROUND_F;
    float r = (x - n * EVM_LN2HI_F) - n * EVM_LN2LO_F;
    /* (e^r - 1 - r) / r^2 by a degree-4 polynomial fitted for least maximum
     * relative error of e^r on |r| <= ln2/2 (0.07 ulp); one term shorter
     * than the Taylor series of the same accuracy. */
    float p = 0.00138146128f;
    p = p * r + 0.00836871006f;
    p = p * r + 0.041668389f;
    p = p * r + 0.166665211f;
    p = p * r + 0.49999994f;
    *n_out = n;
    *ni_out = (int32_t)((uint32_t)evm__f2i(t) - (uint32_t)evm__f2i(EVM_ROUND_F));
    return r + (r * r) * p;
}

EV_HD double evm__expq_f64(double x, double* n_out, int64_t* ni_out) {
    double t = x * EVM_LOG2E_D + EVM_ROUND_D;
    double n = t - EVM_ROUND_D;
    double r = (x - n * EVM_LN2HI_D) - n * EVM_LN2LO_D;
    double p = 1.0 / 6227020800.0;  /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    *n_out = n;
    *ni_out = (int64_t)((uint64_t)evm__d2i(t) - (uint64_t)evm__d2i(EVM_ROUND_D));
    return r + (r * r) * p;
}

/* p * 2^ni for p in [0.5, 2) by adding ni to the exponent bits.  When the
 * result is subnormal the exponent field would underflow, so that lane adds
 * ni+64 instead and multiplies by 2^-64: one correctly placed rounding.
 * Unsigned arithmetic: lanes that are selected away may wrap. */
EV_HD float evm__ldexp_f32(float p, int32_t ni) {
    uint32_t b = (uint32_t)evm__f2i(p) + (uint32_t)ni * (1u << 23);
    float normal = evm__i2f((int32_t)b);
    float tiny = evm__i2f((int32_t)(b + (64u << 23))) * 5.42101086e-20f; /* 2^-64 */
    return ni < -125 ? tiny : normal;
}

EV_HD double evm__ldexp_f64(double p, int64_t ni) {
    uint64_t b = (uint64_t)evm__d2i(p) + (uint64_t)ni * (1ull << 52);
    double normal = evm__i2d((int64_t)b);
    double tiny = evm__i2d((int64_t)(b + (64ull << 52))) * 5.421010862427522e-20; /* 2^-64 */
    return ni < -1021 ? tiny : normal;
}

/* ---- exp ---------------------------------------------------------------- */

/* Inputs are clamped just past total underflow (-103.97 / -745.13), so -inf
 * and huge negatives flow through the same arithmetic and come out as 0.
 * Above the largest x whose exp is finite the answer is selected as inf; up
 * to that x, n <= 128 (1024) and 1+q < 1, so the exponent add stays finite.
 * NaN fails every compare and is restored by the final select. */
#define EVM_EXP_MAX_F 88.7228317f           /* largest float with finite expf */
#define EVM_EXP_MAX_D 709.782712893384      /* largest double with finite exp */

EV_HD float evm_exp_f32(float x) {
    float xc = x >= -104.0f ? x : -104.0f;
    xc = xc <= EVM_EXP_MAX_F ? xc : EVM_EXP_MAX_F;
    float n;
    int32_t ni;
    float q = evm__expq_f32(xc, &n, &ni);
    float y = evm__ldexp_f32(1.0f + q, ni);
    y = x > EVM_EXP_MAX_F ? INFINITY : y;
    return x != x ? x : y;
}

EV_HD double evm_exp_f64(double x) {
    double xc = x >= -746.0 ? x : -746.0;
    xc = xc <= EVM_EXP_MAX_D ? xc : EVM_EXP_MAX_D;
    double n;
    int64_t ni;
    double q = evm__expq_f64(xc, &n, &ni);
    double y = evm__ldexp_f64(1.0 + q, ni);
    y = x > EVM_EXP_MAX_D ? INFINITY : y;
    return x != x ? x : y;
}

/* exp of x <= 0 (or NaN), the case sigmoid and softplus need: one clamp
 * fewer and no overflow select. */
EV_HD float evm__exp_nonpos_f32(float x) {
    float xc = x >= -104.0f ? x : -104.0f;
    float n;
    int32_t ni;
    float q = evm__expq_f32(xc, &n, &ni);
    float y = evm__ldexp_f32(1.0f + q, ni);
    return x != x ? x : y;
}

EV_HD double evm__exp_nonpos_f64(double x) {
    double xc = x >= -746.0 ? x : -746.0;
    double n;
    int64_t ni;
    double q = evm__expq_f64(xc, &n, &ni);
    double y = evm__ldexp_f64(1.0 + q, ni);
    return x != x ? x : y;
}

/* ---- expm1 -------------------------------------------------------------- */

/* e^x - 1 = 2^n*q + (2^n - 1).  For small n, 2^n - 1 is exact, so results
 * near 0 keep full relative precision.  Past n = 25 (54) the -1 is below half
 * an ulp and exp's answer is used.  Below -30 (-40) the answer rounds to -1,
 * so clamping there changes nothing. */
EV_HD float evm__expm1_small_f32(float xc) {  /* xc in [-30, 18] */
    float n;
    int32_t ni;
    float q = evm__expq_f32(xc, &n, &ni);
    float t = evm__i2f((ni + 127) << 23);
    return t * q + (t - 1.0f);
}

EV_HD double evm__expm1_small_f64(double xc) {  /* xc in [-40, 37] */
    double n;
    int64_t ni;
    double q = evm__expq_f64(xc, &n, &ni);
    double t = evm__i2d((ni + 1023) << 52);
    return t * q + (t - 1.0);
}

EV_HD float evm_expm1_f32(float x) {
    float xc = x >= -30.0f ? x : -30.0f;
    xc = xc <= 17.0f ? xc : 17.0f;
    float y = x > 17.0f ? evm_exp_f32(x) : evm__expm1_small_f32(xc);
    y = x == 0.0f ? x : y;  /* keeps the sign of -0 */
    return x != x ? x : y;
}

EV_HD double evm_expm1_f64(double x) {
    double xc = x >= -40.0 ? x : -40.0;
    xc = xc <= 37.0 ? xc : 37.0;
    double y = x > 37.0 ? evm_exp_f64(x) : evm__expm1_small_f64(xc);
    y = x == 0.0 ? x : y;
    return x != x ? x : y;
}

/* ---- log1p -------------------------------------------------------------- */

/* u = 1+x = 2^k * m with m in [sqrt(1/2), sqrt(2)); log m = 2*atanh(s) with
 * s = (m-1)/(m+1), |s| <= 0.1716, as an odd series in s.  The rounding error
 * of 1+x is added back as (x - (u-1))/u, which is what keeps tiny x exact. */
EV_HD float evm_log1p_f32(float x) {
    float u = 1.0f + x;
    float c = (x - (u - 1.0f)) / u;
    /* unsigned arithmetic: u may be negative, inf or NaN here (selected away
     * below), and signed overflow would be undefined behaviour */
    int32_t ia = (int32_t)((uint32_t)evm__f2i(u) - (uint32_t)EVM_SQRTH_BITS_F);
    float k = (float)(ia >> 23);
    float m = evm__i2f((int32_t)(((uint32_t)ia & 0x007fffffu) + EVM_SQRTH_BITS_F));
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float p = 1.0f / 9.0f;
    p = p * z + 1.0f / 7.0f;
    p = p * z + 1.0f / 5.0f;
    p = p * z + 1.0f / 3.0f;
    float logm = 2.0f * s + (2.0f * s) * z * p;
    float y = k * EVM_LN2HI_F + ((logm + c) + k * EVM_LN2LO_F);
    y = x == 0.0f ? x : y;                      /* log1p(-0) = -0 */
    y = x == -1.0f ? -INFINITY : y;
    y = x < -1.0f ? NAN : y;
    y = x == INFINITY ? x : y;
    return x != x ? x : y;
}

EV_HD double evm_log1p_f64(double x) {
    double u = 1.0 + x;
    double c = (x - (u - 1.0)) / u;
    uint64_t ia = (uint64_t)evm__d2i(u) - (uint64_t)EVM_SQRTH_BITS_D;
    /* k = ia >> 52 done without a 64-bit arithmetic shift (none in AVX2):
     * bias to non-negative, shift logically, and turn the small integer into
     * a double through the 2^52 mantissa trick. */
    uint64_t e = (ia + (1023ULL << 52)) >> 52;
    double k = evm__i2d((int64_t)e | 0x4330000000000000LL) - (4503599627370496.0 + 1023.0);
    double m = evm__i2d((int64_t)((ia & 0x000fffffffffffffULL) + (uint64_t)EVM_SQRTH_BITS_D));
    double f = m - 1.0;
    double s = f / (2.0 + f);
    double z = s * s;
    double p = 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    double logm = 2.0 * s + (2.0 * s) * z * p;
    double y = k * EVM_LN2HI_D + ((logm + c) + k * EVM_LN2LO_D);
    y = x == 0.0 ? x : y;
    y = x == -1.0 ? -INFINITY : y;
    y = x < -1.0 ? NAN : y;
    y = x == INFINITY ? x : y;
    return x != x ? x : y;
}

/* ---- tanh, sigmoid, softplus ------------------------------------------- */

/* tanh|x| = -e/(2+e) with e = expm1(-2|x|) in (-1, 0]: no overflow for any
 * x and no cancellation near 0; copysign restores the sign, of -0 too.
 *
 * float32 inlines its own expm1: the loop is bound by the division plus the
 * count of the other vector operations, so each operation saved shows.
 * a = |x| is reduced as s = a + n*ln2/2 with n = round(-2a*log2(e)), i.e.
 * -2a = n*ln2 - 2s, which needs no multiply by -2; then
 *   h = (1 - e^(-2s))/2 = s + s^2*W(s),   |s| <= ln2/4,
 *   e = 2^n*(1 - 2h) - 1 = (-2^(n+1))*h + (2^n - 1),
 * with -2^(n+1) built from the low bits of the rounding sum t (shifted into
 * the exponent field; the high bits of t fall off the top) and 2^n - 1
 * exact.  W has degree 4, fitted for least maximum relative error of h
 * (linear-programming minimax on a dense grid in float64; coefficients
 * rounded to float32 one at a time from the highest, refitting the rest):
 * 1.6e-8 = 0.27 * 2^-24.  Measured over every float32 input against tanh in
 * double rounded to float: at most 2 ulp, with and without FMA hardware.
 *
 * Past |x| = 13*ln2 ~ 9.011 tanh rounds to 1 (1 - tanh|x| < 2^-25), so
 * |x| > 9.1 (with margin) selects 1 and the arithmetic, meaningless out
 * there (inf gives NaN), is discarded: no clamp needed.  NaN fails that
 * compare and propagates through the arithmetic. */
#if defined(__CUDA_ARCH__) || defined(FP_FAST_FMAF)
/* One rounding.  float32 ln2/2 is off by 1e-9, which moves e by at most
 * 2^n*|n|*2e-9 (n <= 0; |e| > 0.29 once n != 0): far below its rounding. */
#define EVM__TANH_REDUCE_F(a, nn) fmaf((nn), -0.346573591f, (a))
#else
/* Without a fused multiply-add n*ln2/2 must be exact: ln2/2 split
 * Cody-Waite style, as the halves of EVM_LN2HI_F and EVM_LN2LO_F. */
#define EVM__TANH_REDUCE_F(a, nn) (((a) - (nn) * 0.3465576171875f) - (nn) * 1.59730925e-05f)
#endif

EV_HD float evm_tanh_f32(float x) {
    float a = fabsf(x);
    float t = a * -2.88539008f + EVM_ROUND_F;  /* -2*log2(e); n = t - ROUND */
    float nn = EVM_ROUND_F - t;                /* -n */
    float s = EVM__TANH_REDUCE_F(a, nn);
    float w = -4.462884739e-02f;
    w = w * s + 1.338659376e-01f;
    w = w * s + -3.333302438e-01f;
    w = w * s + 6.666616797e-01f;
    w = w * s + -1.0f;
    float h = (s * s) * w + s;
    float m2 = evm__i2f((int32_t)(((uint32_t)evm__f2i(t) << 23) + 0xc0000000u)); /* -2^(n+1) */
    float e = m2 * h + (m2 * -0.5f - 1.0f);
    float y = e / (-2.0f - e);
    y = a > 9.1f ? 1.0f : y;
    return copysignf(y, x);
}

EV_HD double evm_tanh_f64(double x) {
    double a = -2.0 * fabs(x);
    double e = evm__expm1_small_f64(a >= -40.0 ? a : -40.0);
    double t = copysign(-e / (2.0 + e), x);
    return x != x ? x : t;
}

/* z = e^-|x| never overflows; 1/(1+z) for x >= 0 and z/(1+z) for x < 0.
 * NaN reaches the z/(1+z) side and stays NaN. */
EV_HD float evm_sigmoid_f32(float x) {
    float z = evm__exp_nonpos_f32(-fabsf(x));
    return (x >= 0.0f ? 1.0f : z) / (1.0f + z);
}

EV_HD double evm_sigmoid_f64(double x) {
    double z = evm__exp_nonpos_f64(-fabs(x));
    return (x >= 0.0 ? 1.0 : z) / (1.0 + z);
}

EV_HD float evm_softplus_f32(float x) {
    return (x > 0.0f ? x : 0.0f) + evm_log1p_f32(evm__exp_nonpos_f32(-fabsf(x)));
}

EV_HD double evm_softplus_f64(double x) {
    return (x > 0.0 ? x : 0.0) + evm_log1p_f64(evm__exp_nonpos_f64(-fabs(x)));
}

/* ---- polynomials and relu ---------------------------------------------- */

EV_HD float evm_cube_f32(float x) { return x * x * x; }
EV_HD double evm_cube_f64(double x) { return x * x * x; }
EV_HD float evm_square_f32(float x) { return x * x; }
EV_HD double evm_square_f64(double x) { return x * x; }
/* NaN propagates like numpy.maximum(x, 0); -0 becomes +0. */
EV_HD float evm_relu_f32(float x) { return x > 0.0f ? x : (x != x ? x : 0.0f); }
EV_HD double evm_relu_f64(double x) { return x > 0.0 ? x : (x != x ? x : 0.0); }

/* ---- derivatives: (x, ans, g) -> dL/dx ---------------------------------- */

EV_HD float evm_tanh_grad_f32(float x, float ans, float g) { (void)x; return g * (1.0f - ans * ans); }
EV_HD double evm_tanh_grad_f64(double x, double ans, double g) { (void)x; return g * (1.0 - ans * ans); }
EV_HD float evm_sigmoid_grad_f32(float x, float ans, float g) { (void)x; return g * ans * (1.0f - ans); }
EV_HD double evm_sigmoid_grad_f64(double x, double ans, double g) { (void)x; return g * ans * (1.0 - ans); }
EV_HD float evm_exp_grad_f32(float x, float ans, float g) { (void)x; return g * ans; }
EV_HD double evm_exp_grad_f64(double x, double ans, double g) { (void)x; return g * ans; }
EV_HD float evm_expm1_grad_f32(float x, float ans, float g) { (void)x; return g * (ans + 1.0f); }
EV_HD double evm_expm1_grad_f64(double x, double ans, double g) { (void)x; return g * (ans + 1.0); }
EV_HD float evm_log1p_grad_f32(float x, float ans, float g) { (void)ans; return g / (1.0f + x); }
EV_HD double evm_log1p_grad_f64(double x, double ans, double g) { (void)ans; return g / (1.0 + x); }
EV_HD float evm_cube_grad_f32(float x, float ans, float g) { (void)ans; return 3.0f * x * x * g; }
EV_HD double evm_cube_grad_f64(double x, double ans, double g) { (void)ans; return 3.0 * x * x * g; }
EV_HD float evm_square_grad_f32(float x, float ans, float g) { (void)ans; return 2.0f * x * g; }
EV_HD double evm_square_grad_f64(double x, double ans, double g) { (void)ans; return 2.0 * x * g; }
EV_HD float evm_relu_grad_f32(float x, float ans, float g) { (void)ans; return x > 0.0f ? g : 0.0f; }
EV_HD double evm_relu_grad_f64(double x, double ans, double g) { (void)ans; return x > 0.0 ? g : 0.0; }
EV_HD float evm_softplus_grad_f32(float x, float ans, float g) { (void)ans; return g * evm_sigmoid_f32(x); }
EV_HD double evm_softplus_grad_f64(double x, double ans, double g) { (void)ans; return g * evm_sigmoid_f64(x); }

#endif /* EV_MATH_H */
