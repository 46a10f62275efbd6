// Read bandwidth of this machine's memory with THREADS threads: each thread sums its share of a
// buffer much larger than the caches with 256-bit loads; prints the best of REPS passes, in
// GB/s (1e9 bytes). The figure a decode step that reads every weight once can approach.
//
// Build and run: gcc -O2 -mavx2 -pthread scripts/read-bandwidth.c -o /tmp/read-bandwidth &&
//                /tmp/read-bandwidth [THREADS=2] [MIB=1024] [REPS=5]
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct share { const __m256i *p; size_t n; long long sum; };

static void *sum_share(void *arg) {
  struct share *s = arg;
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i + 4 <= s->n; i += 4) {
    a = _mm256_add_epi64(a, _mm256_load_si256(s->p + i));
    b = _mm256_add_epi64(b, _mm256_load_si256(s->p + i + 1));
    c = _mm256_add_epi64(c, _mm256_load_si256(s->p + i + 2));
    d = _mm256_add_epi64(d, _mm256_load_si256(s->p + i + 3));
  }
  long long out[4];
  _mm256_storeu_si256((__m256i *)out, _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
  s->sum = out[0] + out[1] + out[2] + out[3];
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  size_t bytes = (size_t)(argc > 2 ? atoi(argv[2]) : 1024) << 20;
  int reps = argc > 3 ? atoi(argv[3]) : 5;
  if (threads < 1 || threads > 256 || bytes < (1u << 20) || reps < 1) {
    fprintf(stderr, "usage: %s [THREADS] [MIB] [REPS]\n", argv[0]);
    return 2;
  }
  __m256i *buf = aligned_alloc(64, bytes);
  if (!buf) { perror("aligned_alloc"); return 1; }
  memset(buf, 1, bytes);
  size_t words = bytes / sizeof(__m256i), per = words / threads;
  double best = 1e30;
  long long total = 0;
  for (int r = 0; r < reps; r++) {
    pthread_t tid[256];
    struct share sh[256];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
      sh[i] = (struct share){buf + i * per, per, 0};
      pthread_create(&tid[i], NULL, sum_share, &sh[i]);
    }
    for (int i = 0; i < threads; i++) { pthread_join(tid[i], NULL); total += sh[i].sum; }
    double dt = now() - t0;
    if (dt < best) best = dt;
  }
  printf("%d threads, %zu MiB: %.1f GB/s (checksum %lld)\n", threads, bytes >> 20,
         per * threads * sizeof(__m256i) / best / 1e9, total);
  free(buf);
  return 0;
}
