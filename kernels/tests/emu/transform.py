#!/usr/bin/env python3
"""Makes host-compilable copies of the sources of a kernel family (kernels/src/FAMILY.cu, or the list in
SOURCES: layer.cu needs router.cu, grouped_gemm.cu, ...), kernels/tests/test_FAMILY.cu and
kernels/tests/harness.cuh for the CPU emulation (emu_cuda.hpp, emu_host.hpp) in OUT_DIR.

    transform.py FAMILY OUT_DIR [--skip PATTERN]... [--source FILE.cu]...
    transform.py FAMILY --list      the translation units OUT_DIR will hold (for CMake), one a line

--source replaces the family's source of the same file name (else kernels/src/FAMILY.cu) by another
copy (mutation checks).

Every source becomes its own translation unit, OUT_DIR/src_NAME.cpp (emu_cuda.hpp, its emulation
headers, NAME.cu.inc), as nvcc compiles the library: the families' internal helpers (anonymous
namespaces, macros such as cp_async_16 or JK_LAUNCH) may share names. OUT_DIR/FAMILY_emu.cpp holds the
fake runtime (emu_host.hpp, defined once), the transformed harness and the test; link them all. The
other tests/*.cuh headers are copied beside the transformed harness.cuh (they include it).

Only mechanical rewrites, nothing else of the sources changes:
  * `K<<<grid, block[, smem[, stream]]>>>(args);`  ->  `::emu::launch("K", K, grid, block, smem, stream, args);`
  * `__shared__ T name[dims];`  ->  a reference to fresh per-block storage (emu::SharedSlot)
  * `extern __shared__ T name[];`  ->  a pointer to the launch's dynamic shared memory
  * harness.cuh: each case starts with emu::begin_case(); emu::Skip (a case too large to emulate, or a
    case name matching a skip pattern) prints `SKIP name: why`; the summary counts the skipped cases.
  * per source (BODIES, keyed by the source's name without .cu): bodies of inline-asm helpers and
    vendor calls (grouped_gemm: mma.sync, ldmatrix, cp.async -> emu_mma.hpp; cuBLASLt lt_gemm -> a host
    GEMM; attention: its PTX wrappers). A source with inline asm left is refused.
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))  # kernels/

# Cases skipped by name (JetMoE-8B-sized or otherwise far too slow on 2 cores); anything else that
# allocates more than EMU_MAX_BYTES or runs more than EMU_MAX_THREADS emulated threads is skipped at run time.
SKIP = {
    'router': [r'N=16384', r'N=100000', r'N=33333', r'N=20000'],
    'fused': [r'rows=16384', r'rows=4096 vocab=32000'],
    'grouped_gemm': [r'^8B ', r'^paths '],  # paths: n, k ~ 1000 over 2400 rows, hours emulated
    'attention': [r'T=4096 Hq=32', r'B=4 T=2048'],  # JetMoE-8B sizes (tuned: hours of emulated mma.sync)
    'layer': [r'D2048'],  # JetMoE-8B sizes (train N=256; decode B2 x 8 steps: not done after 20 min)
    'model': [r'D2048', r'D256'],  # JetMoE-8B blocks; D256: over the thread limit (hours emulated)
}
# The sources a family's test program needs (default: FAMILY.cu), as in the library (kernels/CMakeLists.txt).
SOURCES = {
    'layer': ['layer.cu', 'router.cu', 'grouped_gemm.cu', 'attention.cu', 'fused.cu', 'rmsnorm.cu', 'convert.cu'],
    'model': ['model.cu', 'layer.cu', 'embedding.cu', 'router.cu', 'grouped_gemm.cu', 'attention.cu', 'fused.cu',
              'rmsnorm.cu', 'convert.cu', 'interface.cu'],
}

# Column-major cublasLtMatmul semantics on the host (bf16 A, B; fp32 accumulation; D fp32 or bf16).
LT_GEMM_HOST = '''(void)stream;
  const auto* A = static_cast<const std::uint16_t*>(a);
  const auto* B = static_cast<const std::uint16_t*>(b);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < m; ++i) {
      float acc = 0.0f;
      for (std::int64_t l = 0; l < kk; ++l)
        acc += ::emu::bf(op_a == CUBLAS_OP_N ? A[i + l * lda] : A[l + i * lda]) *
               ::emu::bf(op_b == CUBLAS_OP_N ? B[l + j * ldb] : B[j + l * ldb]);
      if (d_type == CUDA_R_32F) {
        float* D = static_cast<float*>(d) + i + j * ldd;
        *D = beta != 0.0f ? acc + beta * *D : acc;
      } else {
        std::uint16_t* D = static_cast<std::uint16_t*>(d) + i + j * ldd;
        *D = float_to_bf16_bits(beta != 0.0f ? acc + beta * ::emu::bf(*D) : acc);
      }
    }
  return cudaSuccess;'''

# Per source (file name without .cu): (function signature start, new body) for inline-asm helpers and vendor calls.
BODIES = {
    'grouped_gemm': [
        ('__device__ __forceinline__ void mma_bf16_16816(', '::emu::mma(d, a, b);'),
        ('__device__ __forceinline__ void cp_async_16(', '::emu::cp_async_16(dst, src, valid);'),
        ('__device__ __forceinline__ void cp_async_commit(', '::emu::cp_async_commit();'),
        ('__device__ __forceinline__ void cp_async_wait(', '::emu::cp_async_wait(N);'),  # lands the groups (EMU_CP_ASYNC)
        ('__device__ __forceinline__ void ldmatrix_x4(', '::emu::ldmatrix(r, addr, false);'),
        ('__device__ __forceinline__ void ldmatrix_x4_trans(', '::emu::ldmatrix(r, addr, true);'),
        ('cudaError_t lt_handle(', '*out = nullptr; return cudaErrorNotSupported;'),
        ('cudaError_t lt_gemm(', LT_GEMM_HOST),
    ],
    # sm90.cuh (a header, transformed into OUT_DIR where it shadows the original): mbarriers, TMA, wgmma,
    # named barriers -> emu_sm90.hpp
    'sm90': [
        ('__device__ __forceinline__ void mbar_init(', '::emu::mbar_init(bar, count);'),
        ('__device__ __forceinline__ void mbar_fence_init(', '::emu::fence_proxy_async();'),
        ('__device__ __forceinline__ void mbar_arrive(', '::emu::mbar_arrive(bar);'),
        ('__device__ __forceinline__ void mbar_arrive_expect_tx(', '::emu::mbar_arrive_expect_tx(bar, bytes);'),
        ('__device__ __forceinline__ void mbar_wait(', '::emu::mbar_wait(bar, parity);'),
        ('__device__ __forceinline__ void tma_load_2d(', '::emu::tma_load(dst, map, {c0, c1}, bar);'),
        ('__device__ __forceinline__ void tma_load_4d(', '::emu::tma_load(dst, map, {c0, c1, c2, c3}, bar);'),
        ('__device__ __forceinline__ void fence_proxy_async(', '::emu::fence_proxy_async();'),
        ('__device__ __forceinline__ void named_barrier_sync(', '::emu::named_barrier(id, count);'),
        ('__device__ __forceinline__ void wgmma_fence(', '::emu::wgmma_fence();'),
        ('__device__ __forceinline__ void wgmma_commit(', '::emu::wgmma_commit();'),
        ('__device__ __forceinline__ void wgmma_wait(', '::emu::wgmma_wait(N);'),  # completes the groups (EMU_WGMMA)
        ('__device__ __forceinline__ void fence_operand(', '(void)x;'),
        ('__device__ __forceinline__ void wgmma_ss_m64n256k16(', '::emu::wgmma_ss(d, desc_a, desc_b, TRANS_A, TRANS_B);'),
        ('__device__ __forceinline__ void wgmma_ss_m64n128k16(', '::emu::wgmma_ss(d, desc_a, desc_b, TRANS_A, TRANS_B);'),
        ('__device__ __forceinline__ void wgmma_ss_m64n64k16(', '::emu::wgmma_ss(d, desc_a, desc_b, TRANS_A, TRANS_B);'),
        ('__device__ __forceinline__ void wgmma_rs_m64n128k16(', '::emu::wgmma_rs(d, a, desc_b, TRANS_B);'),
        ('__device__ __forceinline__ void wgmma_rs_m64n64k16(', '::emu::wgmma_rs(d, a, desc_b, TRANS_B);'),
    ],
    # attention.cu's PTX wrappers (not JK_ATTENTION_EMULATE: that is the other, test-internal emulator)
    'attention': [
        ('__device__ __forceinline__ void cp_async_16(', '::emu::cp_async_16_bytes(dst, src, src_bytes);'),
        ('__device__ __forceinline__ void cp_async_commit(', '::emu::cp_async_commit();'),
        ('__device__ __forceinline__ void cp_async_wait(', '::emu::cp_async_wait(N);'),  # lands the groups (EMU_CP_ASYNC)
        ('__device__ __forceinline__ void ldmatrix_x4(', '::emu::ldmatrix(r, addr, false);'),
        ('__device__ __forceinline__ void ldmatrix_x4_trans(', '::emu::ldmatrix(r, addr, true);'),
        ('__device__ __forceinline__ void mma_bf16_16816(',
         'const std::uint32_t b[2] = {b0, b1}; ::emu::mma(d, a, b);'),
        ('__device__ __forceinline__ std::uint32_t pack_bf16x2(', 'return ::emu::cvt_rn_bf16x2(hi, lo);'),
    ],
}
# Per source: emulation headers its translation unit includes.
HEADERS = {'grouped_gemm': ['emu_mma.hpp', 'emu_sm90.hpp'], 'attention': ['emu_mma.hpp', 'emu_sm90.hpp']}
# Headers of kernels/src with inline asm: transformed (BODIES keyed by the name without .cuh) into OUT_DIR,
# where a source's `#include "NAME.cuh"` finds them first.
ASM_HEADERS = ['sm90.cuh']
# Per source: (exact text, replacement) for declarations the regexes above do not see (macros).
TEXT = {
    'attention': [
        ('#define JK_ATTENTION_DYNAMIC_SMEM(name) extern __shared__ __align__(16) std::uint16_t name[]',
         '#define JK_ATTENTION_DYNAMIC_SMEM(name) std::uint16_t* name = reinterpret_cast<std::uint16_t*>(::emu::dynamic_smem())'),
    ],
}


def replace_body(text, signature_start, new_body):
    i = text.index(signature_start)
    j = text.index('{', i)
    k = match_fwd(text, j, '{', '}')
    return text[:j] + '{ ' + new_body + ' }' + text[k + 1:]


def match_back(text, i, open_ch, close_ch):
    """text[i] == close_ch: index of the matching open_ch."""
    depth = 0
    for k in range(i, -1, -1):
        if text[k] == close_ch:
            depth += 1
        elif text[k] == open_ch:
            depth -= 1
            if depth == 0:
                return k
    raise SystemExit('unbalanced %s at %d' % (close_ch, i))


def match_fwd(text, i, open_ch, close_ch):
    depth = 0
    for k in range(i, len(text)):
        if text[k] == open_ch:
            depth += 1
        elif text[k] == close_ch:
            depth -= 1
            if depth == 0:
                return k
    raise SystemExit('unbalanced %s at %d' % (open_ch, i))


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def rewrite_launches(src):
    out, pos, n = '', 0, 0
    while True:
        i = src.find('<<<', pos)
        if i < 0:
            break
        # the kernel expression: identifier chars, '::' and balanced template arguments, backwards
        k = i
        while src[k - 1] in ' \t\n':  # attention.cu: `kernel<P, true>\n    <<<grid, ...`
            k -= 1
        if src[k - 1] == '>':
            k = match_back(src, k - 1, '<', '>')
        while src[k - 1].isalnum() or src[k - 1] in '_:':
            k -= 1
        kernel = src[k:i].strip()
        j = src.index('>>>', i)
        cfg = split_top(src[i + 3:j])
        p0 = src.index('(', j)
        p1 = match_fwd(src, p0, '(', ')')
        args = src[p0 + 1:p1].strip()
        assert src[p1 + 1] == ';', src[k:p1 + 2]
        while len(cfg) < 4:
            cfg.append('0')
        name = re.sub(r'\s+', ' ', kernel)
        call = '::emu::launch("%s", %s, %s, %s, %s, %s%s)' % (name, kernel, cfg[0], cfg[1], cfg[2], cfg[3],
                                                             ', ' + args if args else '')
        out += src[pos:k] + call
        pos = p1 + 1
        n += 1
    return out + src[pos:], n


def split_shared_declarators(src):
    """`__shared__ float a[N], b;` -> `__shared__ float a[N]; __shared__ float b;` (simple types only)."""
    def one(m):
        prefix, rest = m.group(1), m.group(2)
        return ' '.join('%s %s;' % (prefix, d) for d in split_top(rest))
    return re.sub(r'(?<!extern )((?:static\s+)?__shared__\s+(?:__align__\(\d+\)\s+)?[\w:]+)\s+([^;{}()]*,[^;{}()]*);',
                  one, src)


def rewrite_shared(src):
    n = [0]
    src = split_shared_declarators(src)

    def ext(m):
        n[0] += 1
        return '%s* %s = reinterpret_cast<%s*>(::emu::dynamic_smem());' % (m.group(1), m.group(2), m.group(1))
    src = re.sub(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:<>, ]+?)\s+(\w+)\s*\[\s*\]\s*;', ext, src)

    def st(m):
        n[0] += 1
        typ, name, dims = m.group(1).strip(), m.group(2), m.group(3) or ''
        slot = 'emu_slot_' + name
        if dims:
            return ('static ::emu::SharedSlot %s; %s (&%s)%s = *reinterpret_cast<%s(*)%s>(%s.get(sizeof(%s%s), alignof(%s)));'
                    % (slot, typ, name, dims, typ, dims, slot, typ, dims, typ))
        return ('static ::emu::SharedSlot %s; %s& %s = *reinterpret_cast<%s*>(%s.get(sizeof(%s), alignof(%s)));'
                % (slot, typ, name, typ, slot, typ, typ))
    src = re.sub(r'(?<!extern )(?:static\s+)?__shared__\s+(?:__align__\(\d+\)\s+)?([\w:<>, ]+?)\s+(\w+)\s*((?:\[[^\]]+\])*)\s*;',
                 st, src)
    return src, n[0]


def transform_source(path, key=None):
    """key: the source's name without .cu (BODIES, TEXT)."""
    src = open(path).read()
    for sig, body in BODIES.get(key, []):
        src = replace_body(src, sig, body)
    for old, new in TEXT.get(key, []):
        assert old in src, '%s: %r not found: update transform.py' % (path, old)
        src = src.replace(old, new)
    src, nl = rewrite_launches(src)
    src, ns = rewrite_shared(src)
    if re.search(r'\basm\b', re.sub(r'//.*', '', src)):
        raise SystemExit('%s has inline asm: add its emulation to transform.py' % path)
    return '#line 1 "%s"\n' % path + src, nl, ns


def transform_harness(path, skips):
    s = open(path).read()
    pat = '|'.join(skips) if skips else '$^'
    a = '''  for (const Case& c : cases) {
    CaseResult result{false, ""};
    try {
      result = c.run();
    } catch (const std::exception& e) {'''
    assert a in s, 'harness.cuh run loop changed: update transform.py'
    s = s.replace(a, '''  int skipped = 0;
  const std::regex emu_skip(std::string(R"EMU(%s)EMU") + (std::getenv("EMU_SKIP") ? std::string("|") + std::getenv("EMU_SKIP") : std::string()));
  const char* emu_only = std::getenv("EMU_ONLY");
  for (const Case& c : cases) {
    CaseResult result{false, ""};
    ::emu::begin_case();
    if (std::regex_search(c.name, emu_skip) || (emu_only && !std::regex_search(c.name, std::regex(emu_only)))) {
      std::printf("SKIP %%s: by name (transform.py's list for the family, EMU_SKIP or EMU_ONLY)\\n", c.name.c_str());
      ++skipped;
      continue;
    }
    try {
      result = c.run();
    } catch (const ::emu::Skip& e) {
      std::printf("SKIP %%s: %%s\\n", c.name.c_str(), e.why.c_str());
      ++skipped;
      continue;
    } catch (const std::exception& e) {''' % pat)
    b = '  std::printf("%d passed, %d failed\\n", passed, failed);'
    assert b in s
    s = s.replace(b, '  std::printf("%d passed, %d failed, %d skipped (emulation)\\n", passed, failed, skipped);')
    return s


def sources_of(family):
    return SOURCES.get(family, [family + '.cu'])


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[1] == '--list':
        print('\n'.join(['%s_emu.cpp' % args[0]] + ['src_%s.cpp' % n[:-3] for n in sources_of(args[0])]))
        return
    if len(args) < 2:
        raise SystemExit(__doc__)
    family, out = args[0], args[1]
    extra = [args[i + 1] for i in range(2, len(args) - 1) if args[i] == '--skip']
    replaced = [args[i + 1] for i in range(2, len(args) - 1) if args[i] == '--source']
    os.makedirs(out, exist_ok=True)
    if family == 'selftest':  # the emulator's own test: emu/selftest.cu, no harness
        src, nl, ns = transform_source(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'selftest.cu'))
        open(os.path.join(out, 'selftest.cu.inc'), 'w').write(src)
        open(os.path.join(out, 'selftest_emu.cpp'), 'w').write(
            '#include "emu_cuda.hpp"\n#include "emu_sm90.hpp"\n#include "jetmoe/kernels.h"\n#include "emu_host.hpp"\n'
            '#include "selftest.cu.inc"\n')
        print('selftest.cu: %d launches, %d shared declarations rewritten' % (nl, ns))
        return
    names = sources_of(family)
    paths = {n: os.path.join(ROOT, 'src', n) for n in names}
    for h in ASM_HEADERS:
        src, nl, ns = transform_source(os.path.join(ROOT, 'src', h), h[:-4])
        assert nl == 0 and ns == 0, '%s: launches or shared declarations in a transformed header' % h
        open(os.path.join(out, h), 'w').write(src)
    for r in replaced:
        paths[os.path.basename(r) if os.path.basename(r) in paths else family + '.cu'] = r
    for name in names:
        key = name[:-3]
        src, nl, ns = transform_source(paths[name], key)
        open(os.path.join(out, name + '.inc'), 'w').write(src)
        open(os.path.join(out, 'src_%s.cpp' % key), 'w').write('\n'.join(
            ['// generated by kernels/tests/emu/transform.py %s: do not edit' % family, '#include "emu_cuda.hpp"'] +
            ['#include "%s"' % h for h in HEADERS.get(key, [])] + ['#include "%s.inc"' % name]) + '\n')
        print('%s: %d launches, %d shared declarations rewritten' % (name, nl, ns))
    open(os.path.join(out, 'harness.cuh'), 'w').write(transform_harness(os.path.join(ROOT, 'tests', 'harness.cuh'),
                                                                          SKIP.get(family, []) + extra))
    # The other test-side headers (tests/*.cuh, e.g. layer_testing.cuh) are copied next to the transformed
    # harness.cuh, so that their own `#include "harness.cuh"` finds it rather than the original.
    for h in sorted(os.listdir(os.path.join(ROOT, 'tests'))):
        if h.endswith('.cuh') and h != 'harness.cuh':
            open(os.path.join(out, h), 'w').write(open(os.path.join(ROOT, 'tests', h)).read())
    test = open(os.path.join(ROOT, 'tests', 'test_%s.cu' % family)).read()
    open(os.path.join(out, 'test_%s.cu.inc' % family), 'w').write(test)
    open(os.path.join(out, family + '_emu.cpp'), 'w').write('\n'.join([
        '// generated by kernels/tests/emu/transform.py %s: do not edit' % family, '#include "emu_cuda.hpp"',
        '#include "jetmoe/kernels.h"', '#include "emu_host.hpp"', '#include "test_%s.cu.inc"' % family]) + '\n')


if __name__ == '__main__':
    main()
