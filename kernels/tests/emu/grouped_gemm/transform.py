# Makes a host-compilable copy of kernels/src/grouped_gemm.cu for the CPU emulation (emu_test.cpp):
# inline-asm helpers -> emu:: calls, <<<>>> launches -> emu::launch. Nothing else changes.
import re, sys
src = open('/work/main/kernels/src/grouped_gemm.cu').read()
common = open('/work/main/kernels/src/common.cuh').read()

def replace_body(text, signature_start, new_body):
    i = text.index(signature_start)
    j = text.index('{', i)
    depth = 0
    for k in range(j, len(text)):
        if text[k] == '{': depth += 1
        elif text[k] == '}':
            depth -= 1
            if depth == 0:
                return text[:j] + '{ ' + new_body + ' }' + text[k + 1:]
    raise SystemExit('unbalanced ' + signature_start)

src = replace_body(src, '__device__ __forceinline__ void mma_bf16_16816(', 'emu::mma(d, a, b);')
src = replace_body(src, '__device__ __forceinline__ void cp_async_16(', 'emu::cp_async_16(dst, src, valid);')
src = replace_body(src, '__device__ __forceinline__ void cp_async_commit(', '')
src = replace_body(src, '__device__ __forceinline__ void cp_async_wait(', '')
src = replace_body(src, '__device__ __forceinline__ void ldmatrix_x4(', 'emu::ldmatrix(r, addr, false);')
src = replace_body(src, '__device__ __forceinline__ void ldmatrix_x4_trans(', 'emu::ldmatrix(r, addr, true);')
src = src.replace('extern __shared__ __align__(128) unsigned char tuned_smem[];', 'unsigned char* tuned_smem = emu::dynamic_smem();')
n_launch = 0
def launch(m):
    global n_launch
    n_launch += 1
    kernel, cfg, args = m.group(1), m.group(2), m.group(3)
    parts = [x.strip() for x in cfg.split(',')]
    return 'emu::launch([&] { %s(%s); }, %s, %s, %s);' % (kernel, args, parts[0], parts[1], parts[2])
src = re.sub(r'([A-Za-z_][\w:<>, ]*?)<<<(.*?)>>>\((.*?)\);', launch, src)
assert n_launch == 6, n_launch
src = replace_body(src, 'cudaError_t lt_gemm(', 'return emu::lt_gemm_host(op_a, op_b, m, n, kk, a, lda, b, ldb, d, d_type, ldd, beta);')
src = src.replace('#include "common.cuh"', '#include "common_emu.cuh"')
open('/tmp/emu/grouped_gemm_emu.cu.inc', 'w').write(src)
open('/tmp/emu/common_emu.cuh', 'w').write(common)
print('ok, launches:', n_launch)
