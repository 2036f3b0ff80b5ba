/* One GPT-2 decode step (one new token per batch row) in C, for the `native` engine (generate/native.py).
 *
 * Why C: for a model of a few million parameters a step is ~100 small tensor ops, and torch's per-op
 * dispatch (a few microseconds each) costs more than the arithmetic; for a large model decoding is a
 * stream over the weights, and the GEMV here reads them at close to memory bandwidth. Weights stay in the
 * torch tensors (pointers only); matrices are [out, in] rows (nn.Linear's layout), fp32 or int8 with one
 * scale per output row; SIMD through AVX-512 or AVX2 intrinsics, or GCC's generic vectors elsewhere.
 * Threads: each matrix's rows are split over `threads` workers that meet at a spinning barrier.
 */
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* One SIMD register of floats: AVX-512, AVX2+FMA, or GCC's generic vectors elsewhere (NEON on ARM). */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vf;
#define W 16
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf load(const float *p) { return _mm512_loadu_ps(p); }
static inline vf loadq(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline vf fma_(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline float hsum(vf v) { return _mm512_reduce_add_ps(v); }
/* The four sums of a0..a3 at once (a reduction per row costs as much as a short row's products). */
static inline __m128 hsum4(vf a0, vf a1, vf a2, vf a3) {
#define HALF(v) _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(HALF(a0), HALF(a1)), _mm256_hadd_ps(HALF(a2), HALF(a3)));
#undef HALF
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
static inline __m128i hsum4i(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
#define HALF(v) _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(HALF(a0), HALF(a1)), _mm256_hadd_epi32(HALF(a2), HALF(a3)));
#undef HALF
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
#define HAVE_HSUM4 1
/* exp(x) to ~2 ulp: x = n ln2 + r, a degree-6 polynomial for exp(r), scaled by 2^n. */
static inline vf vexp(vf x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    const vf n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
    vf r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    vf p = _mm512_set1_ps(1.f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}
#define HAVE_VEXP 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vf;
#define W 8
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf load(const float *p) { return _mm256_loadu_ps(p); }
static inline vf loadq(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline vf fma_(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline float hsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#else
typedef float vf __attribute__((vector_size(16)));
#define W 4
static inline vf vzero(void) { return (vf){0}; }
static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline vf loadq(const int8_t *p) { return (vf){p[0], p[1], p[2], p[3]}; }
static inline vf fma_(vf a, vf b, vf c) { return a * b + c; }
static inline float hsum(vf v) { return v[0] + v[1] + v[2] + v[3]; }
#endif
#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#else
#define PAUSE() ((void)0)
#endif

typedef struct {
    const float *w;      /* [out, in] fp32, or NULL when int8 */
    const int8_t *q;     /* [out, in] int8 */
    const float *scale;  /* [out] for int8 */
    const int32_t *qsum; /* [out] sum of each int8 row (the VNNI path's offset correction) */
    const float *bias;   /* [out] or NULL */
    int64_t in, out;
} Linear;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    Linear attn, proj, fc, out;
    float *keys, *values; /* [slots, heads, cache_len, head_dim] */
} Layer;

typedef struct {
    int64_t n_layer, n_head, d, vocab, cache_len, batch; /* batch: the cache's slots and the most rows per step */
    int act; /* 0 gelu tanh, 1 gelu erf, 2 relu */
    float eps;
    const float *wte, *wpe, *lnf_w, *lnf_b;
    Linear head;
    Layer *layers;
    float *x, *h, *qkv, *a, *ff, *scores, *logits; /* work: [B,d] [B,d] [B,3d] [B,d] [B,d_ff] [B*heads*len] [B,V] */
    uint8_t *xq;      /* int8 VNNI path: per thread, the rows' activations as unsigned bytes [threads, B, max(d, d_ff)] */
    float *xscale;    /* [threads, B] */
    int64_t scratch_threads; /* how many threads xq and xscale have room for */
} Model;

typedef struct {
    const int64_t *ids, *pos, *slot; /* per row: token, its position, its cache slot */
    int64_t rows;
    uint8_t *xq;   /* this worker's part of Model.xq / xscale */
    float *xscale;
} Rows;

/* dot(x, row) over n, n a multiple of W in the vector part. */
static inline float dot(const float *x, const float *r, int64_t n) {
    vf acc = vzero();
    int64_t i = 0;
    for (; i + W <= n; i += W) acc = fma_(load(x + i), load(r + i), acc);
    float s = hsum(acc);
    for (; i < n; i++) s += x[i] * r[i];
    return s;
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* int8 x int8 with VNNI (64 products per instruction): each row of x quantised to bytes with one scale, shifted
 * by 128 to be unsigned (what vpdpbusd takes), the shift taken back out with the weight row's sum. */
static void linear_rows_vnni(const Linear *L, const float *x, int64_t B, float *y, int64_t lo, int64_t hi,
                             uint8_t *xq, float *xscale) {
    const int64_t n = L->in;
    for (int64_t b = 0; b < B; b++) {
        const float *xb = x + b * n;
        float top = 0.f;
        for (int64_t i = 0; i < n; i++) top = fabsf(xb[i]) > top ? fabsf(xb[i]) : top;
        const float scale = top > 0.f ? top / 127.f : 1.f, inv = 1.f / scale;
        xscale[b] = scale;
        for (int64_t i = 0; i < n; i++) xq[b * n + i] = (uint8_t)(lrintf(xb[i] * inv) + 128);
    }
    int64_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const int8_t *r = L->q + j * n;
        for (int64_t b = 0; b < B; b++) {
            const uint8_t *xb = xq + b * n;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
            /* row after row, as linear_rows does (integer sums: any order gives the same) */
            for (int64_t i = 0; i < n; i += 64) a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(xb + i),
                                                                          _mm512_loadu_si512(r + i));
            for (int64_t i = 0; i < n; i += 64) a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(xb + i),
                                                                          _mm512_loadu_si512(r + n + i));
            for (int64_t i = 0; i < n; i += 64) a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(xb + i),
                                                                          _mm512_loadu_si512(r + 2 * n + i));
            for (int64_t i = 0; i < n; i += 64) a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(xb + i),
                                                                          _mm512_loadu_si512(r + 3 * n + i));
            int32_t s[4];
            _mm_storeu_si128((__m128i *)s, hsum4i(a0, a1, a2, a3));
            for (int k = 0; k < 4; k++) {
                const float v = (float)(s[k] - 128 * L->qsum[j + k]) * xscale[b] * L->scale[j + k];
                y[b * L->out + j + k] = L->bias ? v + L->bias[j + k] : v;
            }
        }
    }
    for (; j < hi; j++) {
        const int8_t *r = L->q + j * n;
        for (int64_t b = 0; b < B; b++) {
            __m512i acc = _mm512_setzero_si512();
            for (int64_t i = 0; i < n; i += 64)
                acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(xq + b * n + i), _mm512_loadu_si512(r + i));
            const float v = (float)(_mm512_reduce_add_epi32(acc) - 128 * L->qsum[j]) * xscale[b] * L->scale[j];
            y[b * L->out + j] = L->bias ? v + L->bias[j] : v;
        }
    }
}
#define HAVE_VNNI 1
#else
#define HAVE_VNNI 0
#endif

int pyc_int8_activations(void) { return HAVE_VNNI; } /* 1: int8 rows multiply int8 activations here */

/* y[b, j] = x[b] . row_j + bias_j for rows j in [lo, hi), four rows at a time (one pass over x per four). */
static void linear_rows(const Linear *L, const float *x, int64_t B, float *y, int64_t lo, int64_t hi,
                        const Rows *rows) {
#if HAVE_VNNI
    if (L->q && L->qsum && L->in % 64 == 0) {
        linear_rows_vnni(L, x, B, y, lo, hi, rows->xq, rows->xscale);
        return;
    }
#else
    (void)rows;
#endif
    const int64_t n = L->in;
    int64_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        for (int64_t b = 0; b < B; b++) {
            const float *xb = x + b * n;
            vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
            float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
            int64_t i = 0;
            if (L->q) {
                const int8_t *r = L->q + j * n;
                for (; i + W <= n; i += W) {
                    vf xv = load(xb + i);
                    a0 = fma_(xv, loadq(r + i), a0);
                    a1 = fma_(xv, loadq(r + n + i), a1);
                    a2 = fma_(xv, loadq(r + 2 * n + i), a2);
                    a3 = fma_(xv, loadq(r + 3 * n + i), a3);
                }
                for (; i < n; i++) {
                    t0 += xb[i] * r[i], t1 += xb[i] * r[n + i], t2 += xb[i] * r[2 * n + i], t3 += xb[i] * r[3 * n + i];
                }
            } else {
                const float *r = L->w + j * n;
                /* one row after another, not the 4 side by side: the block streams as one run of memory, which
                 * the prefetchers follow (1.7-1.9x on a 32,768 x 256 head here); the sums are the same */
                int64_t k;
                for (k = 0; k + W <= n; k += W) a0 = fma_(load(xb + k), load(r + k), a0);
                for (k = 0; k + W <= n; k += W) a1 = fma_(load(xb + k), load(r + n + k), a1);
                for (k = 0; k + W <= n; k += W) a2 = fma_(load(xb + k), load(r + 2 * n + k), a2);
                for (k = 0; k + W <= n; k += W) a3 = fma_(load(xb + k), load(r + 3 * n + k), a3);
                i = k;
                for (; i < n; i++) {
                    t0 += xb[i] * r[i], t1 += xb[i] * r[n + i], t2 += xb[i] * r[2 * n + i], t3 += xb[i] * r[3 * n + i];
                }
            }
#ifdef HAVE_HSUM4
            float s[4];
            _mm_storeu_ps(s, hsum4(a0, a1, a2, a3));
            s[0] += t0, s[1] += t1, s[2] += t2, s[3] += t3;
#else
            float s[4] = {hsum(a0) + t0, hsum(a1) + t1, hsum(a2) + t2, hsum(a3) + t3};
#endif
            for (int k = 0; k < 4; k++) {
                float v = L->q ? s[k] * L->scale[j + k] : s[k];
                y[b * L->out + j + k] = L->bias ? v + L->bias[j + k] : v;
            }
        }
    }
    for (; j < hi; j++) {
        for (int64_t b = 0; b < B; b++) {
            float s;
            if (L->q) {
                const int8_t *r = L->q + j * n;
                vf acc = vzero();
                int64_t i = 0;
                for (; i + W <= n; i += W) acc = fma_(load(x + b * n + i), loadq(r + i), acc);
                s = hsum(acc);
                for (; i < n; i++) s += x[b * n + i] * r[i];
                s *= L->scale[j];
            } else {
                s = dot(x + b * n, L->w + j * n, n);
            }
            y[b * L->out + j] = L->bias ? s + L->bias[j] : s;
        }
    }
}

/* ---- threads: a fixed pool that runs each step's parts in lock step ---- */

typedef struct {
    atomic_int arrived;
    atomic_int generation;
    int count;
} Barrier;

static void barrier_wait(Barrier *bar) {
    int gen = atomic_load_explicit(&bar->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&bar->arrived, 1, memory_order_acq_rel) == bar->count - 1) {
        atomic_store_explicit(&bar->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&bar->generation, 1, memory_order_release);
    } else {
        while (atomic_load_explicit(&bar->generation, memory_order_acquire) == gen) PAUSE();
    }
}

static inline void split(int64_t n, int part, int parts, int64_t *lo, int64_t *hi) {
    /* multiples of 16 rows: every row (and activation) is computed the same way whatever the thread count */
    int64_t per = ((n + parts - 1) / parts + 15) / 16 * 16;
    *lo = per * part < n ? per * part : n;
    *hi = per * (part + 1) < n ? per * (part + 1) : n;
}

static void layer_norm(const float *x, const float *w, const float *b, float eps, int64_t d, float *y) {
    float mean = 0.f, var = 0.f;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (float)d;
    for (int64_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
    float inv = 1.0f / sqrtf(var / (float)d + eps);
    for (int64_t i = 0; i < d; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

static inline float activation(int act, float v) {
    if (act == 0) return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    if (act == 1) return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    return v > 0.f ? v : 0.f;
}

/* GELU's tanh form as x * sigmoid(2u) (the same function: 0.5 (1 + tanh u) = sigmoid(2u)): one exp. */
static void activate(int act, float *v, int64_t n) {
    int64_t i = 0;
#ifdef HAVE_VEXP
    if (act == 0) {
        const vf c = _mm512_set1_ps(-2.f * 0.7978845608028654f), k = _mm512_set1_ps(0.044715f), one = _mm512_set1_ps(1.f);
        for (; i + W <= n; i += W) {
            const vf x = load(v + i), u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, x), _mm512_mul_ps(x, x), x));
            _mm512_storeu_ps(v + i, _mm512_div_ps(x, _mm512_add_ps(one, vexp(u))));
        }
    }
#endif
    for (; i < n; i++) v[i] = activation(act, v[i]);
}

/* Attention of row b's head hd for its new token at `pos` in cache slot `slot` (its k, v already there). */
static void attend(const Model *m, const Layer *l, int64_t b, int64_t hd, int64_t pos, int64_t slot) {
    const int64_t dh = m->d / m->n_head, len = m->cache_len;
    const float *q = m->qkv + b * 3 * m->d + hd * dh;
    const float *keys = l->keys + ((slot * m->n_head + hd) * len) * dh;
    const float *values = l->values + ((slot * m->n_head + hd) * len) * dh;
    float *s = m->scores + (b * m->n_head + hd) * len;
    const float scale = 1.0f / sqrtf((float)dh);
    int64_t t = 0;
#ifdef HAVE_HSUM4
    if (dh % W == 0) { /* four positions per pass, their four sums reduced together */
        for (; t + 4 <= pos + 1; t += 4) {
            const float *k0 = keys + t * dh;
            vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
            for (int64_t i = 0; i < dh; i += W) {
                const vf qv = load(q + i);
                a0 = fma_(qv, load(k0 + i), a0);
                a1 = fma_(qv, load(k0 + dh + i), a1);
                a2 = fma_(qv, load(k0 + 2 * dh + i), a2);
                a3 = fma_(qv, load(k0 + 3 * dh + i), a3);
            }
            _mm_storeu_ps(s + t, _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(scale)));
        }
    }
#endif
    for (; t <= pos; t++) s[t] = dot(q, keys + t * dh, dh) * scale;
    float top = -INFINITY;
    for (t = 0; t <= pos; t++) top = s[t] > top ? s[t] : top;
    float total = 0.f;
    t = 0;
#ifdef HAVE_VEXP
    vf sum = vzero();
    for (; t + W <= pos + 1; t += W) {
        const vf e = vexp(_mm512_sub_ps(load(s + t), _mm512_set1_ps(top)));
        _mm512_storeu_ps(s + t, e);
        sum = _mm512_add_ps(sum, e);
    }
    total = hsum(sum);
#endif
    for (; t <= pos; t++) total += (s[t] = expf(s[t] - top));
    float *out = m->a + b * m->d + hd * dh;
    memset(out, 0, sizeof(float) * dh);
    for (int64_t t = 0; t <= pos; t++) {
        const float p = s[t] / total, *v = values + t * dh;
        for (int64_t i = 0; i < dh; i++) out[i] += p * v[i];
    }
}

typedef struct {
    Model *m;
    Rows rows;
    int part, parts;
    Barrier *bar;
} Job;

/* The whole step as seen by worker `part`: row-split matrix products, the rest split by (row, head) or row. */
static void step_part(Job *job) {
    Model *m = job->m;
    const Rows *r = &job->rows;
    const int64_t B = r->rows, d = m->d, H = m->n_head, dh = d / H;
    const int part = job->part, parts = job->parts;
    int64_t lo, hi;
    for (int64_t b = part; b < B; b += parts) {
        const float *e = m->wte + r->ids[b] * d, *p = m->wpe + r->pos[b] * d;
        for (int64_t i = 0; i < d; i++) m->x[b * d + i] = e[i] + p[i];
    }
    barrier_wait(job->bar);
    for (int64_t li = 0; li < m->n_layer; li++) {
        const Layer *l = &m->layers[li];
        for (int64_t b = part; b < B; b += parts) layer_norm(m->x + b * d, l->ln1_w, l->ln1_b, m->eps, d, m->h + b * d);
        barrier_wait(job->bar);
        split(3 * d, part, parts, &lo, &hi);
        linear_rows(&l->attn, m->h, B, m->qkv, lo, hi, r);
        barrier_wait(job->bar);
        for (int64_t bh = part; bh < B * H; bh += parts) { /* new k, v into the cache, then attention */
            const int64_t b = bh / H, hd = bh % H, slot = r->slot[b];
            const int64_t at = ((slot * H + hd) * m->cache_len + r->pos[b]) * dh;
            memcpy(l->keys + at, m->qkv + b * 3 * d + d + hd * dh, sizeof(float) * dh);
            memcpy(l->values + at, m->qkv + b * 3 * d + 2 * d + hd * dh, sizeof(float) * dh);
            attend(m, l, b, hd, r->pos[b], slot);
        }
        barrier_wait(job->bar);
        split(d, part, parts, &lo, &hi);
        linear_rows(&l->proj, m->a, B, m->h, lo, hi, r);
        barrier_wait(job->bar);
        for (int64_t b = part; b < B; b += parts) {
            for (int64_t i = 0; i < d; i++) m->x[b * d + i] += m->h[b * d + i];
            layer_norm(m->x + b * d, l->ln2_w, l->ln2_b, m->eps, d, m->h + b * d);
        }
        barrier_wait(job->bar);
        const int64_t dff = l->fc.out;
        split(dff, part, parts, &lo, &hi);
        linear_rows(&l->fc, m->h, B, m->ff, lo, hi, r);
        for (int64_t b = 0; b < B; b++) activate(m->act, m->ff + b * dff + lo, hi - lo);
        barrier_wait(job->bar);
        split(d, part, parts, &lo, &hi);
        linear_rows(&l->out, m->ff, B, m->h, lo, hi, r);
        barrier_wait(job->bar);
        for (int64_t b = part; b < B; b += parts)
            for (int64_t i = 0; i < d; i++) m->x[b * d + i] += m->h[b * d + i];
        barrier_wait(job->bar);
    }
    for (int64_t b = part; b < B; b += parts) layer_norm(m->x + b * d, m->lnf_w, m->lnf_b, m->eps, d, m->h + b * d);
    barrier_wait(job->bar);
    split(m->vocab, part, parts, &lo, &hi);
    linear_rows(&m->head, m->h, B, m->logits, lo, hi, r);
}

/* ---- a pool of worker threads kept between steps: they spin a little (the next step comes within
 * microseconds while generating), then sleep on a condition variable ---- */

#define MAX_THREADS 64
#define SPINS 20000

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int generation, finished;
    int started, sleeping, parts, created_at; /* created_at: the generation a new worker starts from */
    Job jobs[MAX_THREADS];
    Barrier bar;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER; /* ctypes drops the GIL: one step at a time */

static void *pool_worker(void *arg) {
    const int index = (int)(intptr_t)arg;
    int seen = pool.created_at;
    for (;;) {
        for (int spins = 0; atomic_load_explicit(&pool.generation, memory_order_acquire) == seen;) {
            if (++spins < SPINS) {
                PAUSE();
                continue;
            }
            pthread_mutex_lock(&pool.lock);
            pool.sleeping++;
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            pool.sleeping--;
            pthread_mutex_unlock(&pool.lock);
        }
        seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (index < pool.parts) step_part(&pool.jobs[index]);
        /* Every worker acknowledges every step, taking part or not: the next step cannot begin while one of
         * them still holds an old generation (it would take a part twice when the thread count grows). */
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    }
    return NULL;
}

static void forget_pool(void) { /* a forked child has none of the parent's threads */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&step_lock, NULL);
    pool.started = pool.sleeping = 0;
}

/* One step for `rows` rows (row b: token ids[b] at position pos[b], cache slot slot[b]; slots distinct) over
 * `threads` workers, this thread one of them (fewer if threads cannot be started). Logits of row b in
 * Model.logits[b]. 0, or -1 bad row count, -2 a position past the cache, -3 a token id outside the
 * vocabulary, -4 a slot outside the cache. */
int pyc_step(Model *m, const int64_t *ids, const int64_t *pos, const int64_t *slot, int64_t rows, int threads) {
    static int registered = 0;
    if (rows < 1 || rows > m->batch) return -1;
    for (int64_t b = 0; b < rows; b++) {
        if (pos[b] < 0 || pos[b] >= m->cache_len) return -2;
        if (ids[b] < 0 || ids[b] >= m->vocab) return -3;
        if (slot[b] < 0 || slot[b] >= m->batch) return -4;
    }
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (m->xq && threads > m->scratch_threads) threads = (int)m->scratch_threads;
    pthread_mutex_lock(&step_lock);
    if (!registered) registered = pthread_atfork(NULL, NULL, forget_pool) == 0;
    pool.created_at = atomic_load(&pool.generation);
    while (pool.started < threads - 1) {
        pthread_t tid;
        if (pthread_create(&tid, NULL, pool_worker, (void *)(intptr_t)(pool.started + 1)) != 0) break;
        pthread_detach(tid);
        pool.started++;
    }
    if (threads > pool.started + 1) threads = pool.started + 1;
    const int64_t scratch = m->batch * (m->layers[0].fc.out > m->d ? m->layers[0].fc.out : m->d);
    for (int t = 0; t < threads; t++) {
        uint8_t *xq = m->xq ? m->xq + t * scratch : NULL;
        float *xscale = m->xscale ? m->xscale + t * m->batch : NULL;
        pool.jobs[t] = (Job){m, (Rows){ids, pos, slot, rows, xq, xscale}, t, threads, &pool.bar};
    }
    pool.bar = (Barrier){0, 0, threads};
    pool.parts = threads;
    atomic_store(&pool.finished, 0);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    if (pool.sleeping) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    step_part(&pool.jobs[0]);
    while (atomic_load_explicit(&pool.finished, memory_order_acquire) < pool.started) PAUSE();
    pthread_mutex_unlock(&step_lock);
    return 0;
}
