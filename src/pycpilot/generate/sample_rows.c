/* Sampling, one token per row: the rule of draw.py (`masses` and `draw`), for the native engine.

   Weights exp(x / T - max) in fixed point (integers summed exactly), top-k (the k likeliest and any tied with
   the k-th), top-p from the least likely up (a token goes while it and everything less likely weigh at most
   (1 - p) of the total; ties by id, highest first), then the inverse CDF of u over the kept weights in id
   order. Each row is done alone, in order, so its token never depends on the other rows. Top-k and top-p
   select by quickselect, not by sorting: O(vocabulary) per row.

   Speed: every pass over the vocabulary is a loop the compiler vectorises. Sums of masses are reductions
   under `omp simd` (-fopenmp-simd: no OpenMP runtime), which may add in any order: the masses are integers,
   so every order gives the same sum; without the pragma, a float sum runs one add at a time. */

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 to ~2 ulp, without a libm call so that the compiler vectorises the loop over a row (libm's
   expf is scalar: it was most of the sampler's time): x = n ln2 + r, a degree-6 polynomial for exp(r), 2^n
   written into the exponent. Below e^-87 the weight is ~1e-38, which the fixed-point scaling makes 0. */
static inline float exp_neg(float x) {
    x = x > -87.0f ? x : -87.0f; /* a NaN too (from inf - inf): its bits would make no weight */
    const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#define BUCKETS 8192 /* float weights in (0, 1]: bits >> 17 < 0x3f800000 >> 17 + 1 */

static inline int64_t bucket_of(float w) {
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    return (int64_t)(bits >> 17);
}

/* Where a weight's mass goes in a histogram of `buckets` from bucket `base` up, clamped both ways. */
static inline int64_t slot_of(float w, int64_t base, int64_t buckets) {
    int64_t b = bucket_of(w) - base;
    return b < 0 ? 0 : b < buckets ? b : buckets - 1;
}

/* The order from the least likely up: by weight, then by id, highest first. */
static inline int less(const float *w, int64_t a, int64_t b) { return w[a] < w[b] || (w[a] == w[b] && a > b); }

static void swap(int64_t *v, int64_t i, int64_t j) { int64_t t = v[i]; v[i] = v[j]; v[j] = t; }

/* Partition idx[lo, hi) around the median of three; returns the pivot's final place. */
static int64_t partition(const float *w, int64_t *idx, int64_t lo, int64_t hi) {
    int64_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (less(w, idx[mid], idx[lo])) swap(idx, mid, lo);
    if (less(w, idx[last], idx[lo])) swap(idx, last, lo);
    if (less(w, idx[mid], idx[last])) swap(idx, mid, last); /* the median now sits at `last` */
    int64_t pivot = idx[last], store = lo;
    for (int64_t i = lo; i < last; i++)
        if (less(w, idx[i], pivot)) swap(idx, i, store++);
    swap(idx, store, last);
    return store;
}

/* The weight of the k-th likeliest token (k >= 1). */
static float kth_largest(const float *w, int64_t *idx, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n, want = n - k; /* its place from the least likely up */
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    while (hi - lo > 1) {
        int64_t at = partition(w, idx, lo, hi);
        if (at == want) break;
        if (at < want) lo = at + 1; else hi = at;
    }
    return w[idx[want]];
}

/* Top-p inside the cut's bucket: idx holds its tokens (mass > 0), n of them; drops (zeroes the mass of) those
   that go while what goes stays <= limit, least likely first. Returns the mass dropped. */
static double top_p_drop(const float *w, double *fixed, int64_t *idx, int64_t n, double limit) {
    int64_t lo = 0, hi = n;
    double below = 0; /* mass of the tokens already dropped */
    while (hi > lo) {
        int64_t at = partition(w, idx, lo, hi);
        double lower = 0;
        for (int64_t i = lo; i < at; i++) lower += fixed[idx[i]];
        if (below + lower + fixed[idx[at]] <= limit) { /* the pivot and all below it go */
            below += lower + fixed[idx[at]];
            for (int64_t i = lo; i <= at; i++) fixed[idx[i]] = 0;
            lo = at + 1;
        } else if (below + lower <= limit) { /* all below the pivot go, the pivot stays */
            for (int64_t i = lo; i < at; i++) fixed[idx[i]] = 0;
            return below + lower;
        } else {
            hi = at; /* the cut is below the pivot */
        }
    }
    return below;
}

/* The first i at which the running sum of v passes target (n - 1 if none does), and the sum of v before it
   (top-p's cut over the buckets, the inverse CDF over the tokens): blocks of 64 summed at once while they do
   not pass it (integers: exact in any order), then one by one. */
static int64_t first_past(const double *v, int64_t n, double target, double *before) {
    double sum = 0;
    int64_t i = 0;
    while (i + 64 < n) {
        double block = 0;
        _Pragma("omp simd reduction(+ : block)")
        for (int64_t j = 0; j < 64; j++) block += v[i + j];
        if (sum + block > target) break;
        sum += block;
        i += 64;
    }
    for (; i < n - 1 && sum + v[i] <= target; i++) sum += v[i];
    *before = sum;
    return i;
}

/* work: vocab floats + vocab doubles + vocab int64, then BUCKETS doubles. Returns 0. */
int pyc_sample(const float *const *logits, int64_t rows, int64_t vocab, const float *temperature, const int64_t *top_k,
               const float *top_p, const double *u, double one, void *work, int64_t *out) {
    float *w = (float *)work;
    double *fixed = (double *)(w + vocab + (vocab & 1));
    int64_t *idx = (int64_t *)(fixed + vocab);
    double *hist = (double *)(idx + vocab);
    /* Weights below 0.5 / one round to mass 0: their buckets fold into the first one. one <= 2^51, so
       base >= (127 - 52) << 6 and the two histograms below (2 * buckets) fit in BUCKETS doubles. */
    const float least = (float)(0.5 / one);
    const int64_t base = bucket_of(least), buckets = BUCKETS - base;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits[r]; /* rows by address: a batch's rows need not be gathered first */
        float t = temperature[r];
        float top = x[0];
        _Pragma("omp simd reduction(max : top)")
        for (int64_t i = 1; i < vocab; i++) top = x[i] > top ? x[i] : top;
        if (t <= 0) {
            int64_t best = 0;
            while (best < vocab - 1 && !(x[best] == top)) best++;
            out[r] = best;
            continue;
        }
        float tt = t > 1e-6f ? t : 1e-6f;
        top = top / tt;
        for (int64_t i = 0; i < vocab; i++) w[i] = exp_neg(x[i] / tt - top);
        int64_t k = top_k[r];
        if (k > 0 && k < vocab) {
            float kth = kth_largest(w, idx, vocab, k);
            for (int64_t i = 0; i < vocab; i++) if (w[i] < kth) w[i] = 0;
        }
        double total = 0;
        _Pragma("omp simd reduction(+ : total)")
        for (int64_t i = 0; i < vocab; i++) {
            fixed[i] = nearbyint((double)w[i] * one);
            total += fixed[i];
        }
        if (top_p[r] < 1.0f) {
            /* at most total - 1: the likeliest token stays even where 1 - p rounds to 1 */
            double limit = fmin(floor((1.0 - (double)top_p[r]) * total), total - 1);
            /* Masses by the top bits of the float weight (exponent and 6 bits of mantissa: weights within
               ~1.6% share a bucket); the buckets wholly below the cut go at once, and only the tokens of the
               cut's bucket are selected one by one. Two histograms, of even and of odd ids: with one, the adds
               of the many tokens of a bucket would wait for each other. */
            double *odd = hist + buckets;
            memset(hist, 0, sizeof(double) * 2 * buckets);
            for (int64_t i = 0; i + 1 < vocab; i += 2) {
                hist[slot_of(w[i], base, buckets)] += fixed[i];
                odd[slot_of(w[i + 1], base, buckets)] += fixed[i + 1];
            }
            if (vocab & 1) hist[slot_of(w[vocab - 1], base, buckets)] += fixed[vocab - 1];
            for (int64_t i = 0; i < buckets; i++) hist[i] += odd[i];
            double below;
            int64_t cut = first_past(hist, buckets, limit, &below) + base, n = 0;
            for (int64_t i = 0; i < vocab; i++) fixed[i] = bucket_of(w[i]) < cut ? 0 : fixed[i];
            for (int64_t at = 0; at < vocab; at += 64) { /* few tokens are in the cut's bucket: test 64 at once */
                int64_t end = at + 64 < vocab ? at + 64 : vocab, any = 0;
                _Pragma("omp simd reduction(| : any)")
                for (int64_t i = at; i < end; i++) any |= bucket_of(w[i]) == cut;
                if (any)
                    for (int64_t i = at; i < end; i++)
                        if (bucket_of(w[i]) == cut && fixed[i] > 0) idx[n++] = i;
            }
            total -= below + top_p_drop(w, fixed, idx, n, limit - below);
        }
        double target = floor(u[r] * total);
        if (target > total - 1) target = total - 1;
        double before;
        out[r] = first_past(fixed, vocab, target, &before);
    }
    return 0;
}
