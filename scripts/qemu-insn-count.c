// A QEMU TCG plugin (plugin API version 1, QEMU 7.x user mode) that counts the AArch64
// instructions a program executes, and among them the Advanced SIMD / FP ones (data
// processing and SIMD&FP register loads/stores), for scripts/neon-insn-count.sh. It prints
// "insns N simd M" to stderr at exit; with the argument top=K, also the K translation blocks
// that executed the most instructions ("block VADDR insns N"), to map to symbols.
//
// Build: gcc -shared -fPIC -O2 -o qemu-insn-count.so scripts/qemu-insn-count.c
// Run:   qemu-aarch64 -plugin ./qemu-insn-count.so -L /usr/aarch64-linux-gnu PROGRAM ...
//
// Only the few entry points used are declared here (QEMU's plugin interface; QEMU does not
// install its header on Debian).

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    int system_emulation; // bool in QEMU; followed by a union not read here
} qemu_info_prefix;

enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*atexit_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, atexit_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

// Non-atomic inline adds: exact for a single-threaded guest (run the programs with 1 thread).
static uint64_t insns, simd;

// With top=K: every translated block's address, size and execution count.
struct block {
    uint64_t vaddr, n, count;
};
static struct block **blocks;
static size_t n_blocks, cap_blocks;
static long top;

// AArch64 top-level encoding (op0 = bits 28..25): x111 is scalar FP / Advanced SIMD data
// processing; x1x0 is loads and stores, with bit 26 set for SIMD&FP registers.
static int is_simd(uint32_t w) {
    uint32_t op0 = (w >> 25) & 0xf;
    if ((op0 & 0x7) == 0x7) return 1;
    return (op0 & 0x5) == 0x4 && ((w >> 26) & 1);
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb), vector = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t w = 0;
        if (qemu_plugin_insn_size(insn) == 4) memcpy(&w, qemu_plugin_insn_data(insn), 4);
        vector += is_simd(w);
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, n);
    if (top > 0 && n > 0) {
        if (n_blocks == cap_blocks) {
            cap_blocks = cap_blocks ? 2 * cap_blocks : 4096;
            blocks = realloc(blocks, cap_blocks * sizeof *blocks);
        }
        struct block *b = calloc(1, sizeof *b);
        b->vaddr = qemu_plugin_tb_vaddr(tb);
        b->n = n;
        blocks[n_blocks++] = b;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
    }
    if (vector) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &simd, vector);
}

static int by_insns(const void *a, const void *b) {
    const struct block *x = *(struct block *const *)a, *y = *(struct block *const *)b;
    uint64_t u = x->n * x->count, v = y->n * y->count;
    return u < v ? 1 : u > v ? -1 : 0;
}

static void done(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    fprintf(stderr, "insns %" PRIu64 " simd %" PRIu64 "\n", insns, simd);
    qsort(blocks, n_blocks, sizeof *blocks, by_insns);
    for (size_t i = 0; i < n_blocks && (long)i < top; i++)
        fprintf(stderr, "block 0x%" PRIx64 " insns %" PRIu64 "\n", blocks[i]->vaddr,
                blocks[i]->n * blocks[i]->count);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_prefix *info,
                                                               int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "top=", 4) == 0) top = strtol(argv[i] + 4, NULL, 10);
    if (strcmp(info->target_name, "aarch64") != 0) return 1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}
