#!/usr/bin/env python3
"""The CUDA kernels against PyTorch / HF transformers in one process, through ctypes.

The kernels' shared library (libjetmoe_kernels.so, CMake target jetmoe_kernels_shared) is loaded with
ctypes and run on torch's tensors (their data_ptr() are the device pointers), beside HF's own JetMoE
modules in bf16 on the same device:

  GPU:  python3 kernels/tests/torch_check.py --lib build-kernels/libjetmoe_kernels.so --device cuda --shape 8b
  CPU:  /opt/oracle-venv/bin/python kernels/tests/torch_check.py \\
            --lib build/kernels/libjetmoe_kernels_emu.so --device cpu               (CTest kernels.emu.torch_check)

--device cpu needs the emulated library (libjetmoe_kernels_emu.so, target jetmoe_kernels_emu_shared: the
real kernel sources run on the CPU by kernels/tests/emu, whose "device memory" is host memory, so torch
CPU tensors are passed as device pointers); --device cuda the real one.

Checks, one PASS/FAIL line each with the measured numbers (exit 0 only when all pass; 1 a failure, 2 bad
arguments, 77 no CUDA device for --device cuda, or no torch / transformers):

  layer.<path>  one JetMoE block (HF JetMoeDecoderLayer, bf16, random non-zero weights and inputs, B x T
                tokens): HF's forward vs jk_layer_fwd (HF's bf16 parameter tensors passed as the weights,
                in HF's layouts as layer.h documents; RoPE table from jk_fused_rope_table), then HF
                autograd of sum(out * dout) vs jk_layer_bwd (aux coefficients 0, grad_beta 0): out, dx
                and all 11 weight gradients (HF's bf16 .grad widened vs our fp32), and the expert choices
                of both routers. <path>: --paths (tuned; wgmma, simple on request).
  model         the causal LM (HF JetMoeForCausalLM, bf16, --model-layers blocks, untied head): HF's
                logits vs jk_model_eval's, jk_model_eval's vs jk_model_fwd's (bit for bit, as model.h
                says), and every block's expert choices (from jk_model_fwd's saved buffer) vs HF's.

Near ties. Two bf16 implementations that differ by a few ulps may route a token differently where its
k-th and (k+1)-th router logits are nearly equal; the GPU tests allow a difference only there
(layer_testing.cuh near_tie: gap <= 5e-2 of the row's logit RMS, HF's logits here). In the layer check
every token whose top-k is a near tie in either router (HF's logits) is excluded: its out and dx rows are
not compared and its dout row is 0 on both sides, so its routing cannot reach dx or any weight gradient
(its K/V do not depend on its routing); every other token must be routed exactly as HF routes it (as
sets). In the model check a routing difference at a near tie changes the token's next hidden state and,
through attention, every later position of its sequence in the following blocks, so the positions a
difference can reach are excluded from the logits comparison (a difference elsewhere fails). Counts are
printed.

Tolerances (kernels/notes/layer.md, kernels/tests/test_layer.cu, test_model.cu): the GPU tests bound the
device against a double-precision reference that applies HF's bf16 roundings by 3e-2 relative RMS and
0.25 max error (relative to the row's RMS) per token row in the forward, and the backward against exact
maths by 5e-2 / 0.5 per tensor (dx per row). Against HF itself the forward has the same sources of
difference (fp32 summation order of the GEMMs, each rounded once to bf16 on both sides; the attention's
bf16 P in FA2 style vs HF sdpa), so out and the logits get 3e-2 / 0.25 per row. HF's backward is itself a
bf16 chain (its autograd sums the bf16 gradients of u1 and u2 one by one where we sum in fp32 and round
once; its weight gradients are bf16) of the same size as ours against exact maths (<= 2.2e-2 RMS, 0.15
max on the CPU calibration of layer.md), so the difference of the two is at most about their sum,
4.4e-2 RMS and 0.3 max, within the GPU test's 5e-2 / 0.5 (dx per row, weight gradients per tensor).
Measured on the emulated kernels (kernels/notes/layer.md): out <= 1.3e-2 / 4.7e-2, dx <= 1.8e-2 /
7.6e-2, gradients <= 1.1e-2 / 0.18, logits <= 1.4e-2 / 4.0e-2. An indexing or layout bug gives O(1).
"""
import argparse
import ctypes
import math
import os
import sys
import time

try:
    import torch
    from transformers.models.jetmoe.modeling_jetmoe import (JetMoeDecoderLayer, JetMoeForCausalLM,
                                                            JetMoeRotaryEmbedding, JetMoeTopKGating)
except ImportError as e:  # pragma: no cover
    print("torch_check.py: needs torch and transformers (%s); exit 77" % e)
    sys.exit(77)
# HF's config of a block's sizes, as the benchmarks' peers build it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from peer_common import jetmoe_config  # noqa: E402

# Tolerances (why: the docstring's last paragraph), relative to the reference's RMS (per row or tensor).
FWD_RMS, FWD_MAX = 3e-2, 0.25   # out, logits: per token row (test_layer.cu kFwdRms, kFwdMax)
BWD_RMS, BWD_MAX = 5e-2, 0.5    # dx per row, weight gradients per tensor (test_layer.cu kBwdRms, kBwdMax)
NEAR_TIE = 5e-2                 # gap of the k-th and (k+1)-th logit over the row's logit RMS (near_tie)

SHAPES = {  # B, T, D, E, k, H_kv, d, F; model: V, L
    # d 64: the layer runs the tuned (FA2, mma.sync) attention kernels, as at JetMoE-8B; ~25 s emulated.
    "small": dict(batch=2, seq=32, hidden=128, experts=8, top_k=2, kv_heads=2, head_dim=64, ffn=128,
                  vocab=256, model_layers=2, model_seq=16),
    "8b": dict(batch=1, seq=1024, hidden=2048, experts=8, top_k=2, kv_heads=16, head_dim=128, ffn=5632,
               vocab=32000, model_layers=2, model_seq=512),
}

# ---- the C interface (kernels/include/jetmoe/layer.h, model.h, fused.h) --------------------------------
c_i64, c_f32, c_vp = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p

WEIGHT_FIELDS = ("input_norm", "moa_router", "moa_q", "kv_proj", "moa_o", "moa_bias", "post_norm", "moe_router",
                 "moe_in", "moe_out", "moe_bias")
# The HF parameter of each field (JetMoeDecoderLayer), in the same order.
HF_NAMES = ("input_layernorm.weight", "self_attention.experts.router.layer.weight",
            "self_attention.experts.input_linear.weight", "self_attention.kv_proj.weight",
            "self_attention.experts.output_linear.weight", "self_attention.experts.bias",
            "post_attention_layernorm.weight", "mlp.router.layer.weight", "mlp.input_linear.weight",
            "mlp.output_linear.weight", "mlp.bias")

PATHS = {"tuned": 0, "simple": 1, "wgmma": 2}  # jk_layer_path_t


class LayerConfig(ctypes.Structure):  # jk_layer_config_t
    _fields_ = [("hidden", c_i64), ("num_experts", c_i64), ("top_k", c_i64), ("kv_heads", c_i64),
                ("head_dim", c_i64), ("ffn", c_i64), ("eps", c_f32), ("aux_switch_coef", c_f32),
                ("aux_z_coef", c_f32), ("rope_table", c_vp), ("rope_max_positions", c_i64),
                ("path", ctypes.c_int)]  # enum jk_layer_path_t


class LayerWeights(ctypes.Structure):  # jk_layer_weights_t: const uint16_t* each
    _fields_ = [(n, c_vp) for n in WEIGHT_FIELDS]


class LayerGrads(ctypes.Structure):  # jk_layer_grads_t: float* each
    _fields_ = [(n, c_vp) for n in WEIGHT_FIELDS]


class ModelConfig(ctypes.Structure):  # jk_model_config_t
    _fields_ = [("layer", LayerConfig), ("vocab", c_i64), ("num_layers", c_i64), ("has_embedding", ctypes.c_int32),
                ("has_head", ctypes.c_int32), ("final_eps", c_f32), ("recompute", ctypes.c_int32),
                ("head_chunk", c_i64)]


class ModelWeights(ctypes.Structure):  # jk_model_weights_t (layers: a host array)
    _fields_ = [("embedding", c_vp), ("layers", ctypes.POINTER(LayerWeights)), ("final_norm", c_vp), ("lm_head", c_vp)]


class ModelBatch(ctypes.Structure):  # jk_model_batch_t
    _fields_ = [("batch", c_i64), ("seq", c_i64), ("ids", c_vp), ("x_in", c_vp), ("labels", c_vp)]


# The interface version these bindings were written for (kernels/include/jetmoe/kernels.h, JK_ABI_VERSION),
# and each structure's jk_* name: Kernels() checks both against the library before any call.
ABI_VERSION = 3
STRUCTS = {"jk_layer_config_t": LayerConfig, "jk_layer_weights_t": LayerWeights, "jk_layer_grads_t": LayerGrads,
           "jk_model_config_t": ModelConfig, "jk_model_weights_t": ModelWeights, "jk_model_batch_t": ModelBatch}

P = ctypes.POINTER
# The functions (C linkage: plain names) with the types of kernels/include/jetmoe/*.h at ABI_VERSION.
FUNCTIONS = {
    # name: (restype, argtypes)
    "jk_abi_version": (ctypes.c_int, []),
    "jk_struct_size": (ctypes.c_size_t, [ctypes.c_char_p]),
    "jk_compiled_architectures": (ctypes.c_char_p, []),
    "jk_runtime_info": (ctypes.c_int, [c_vp]),
    "jk_runtime_info_describe": (ctypes.c_int,
                                 [c_vp, ctypes.c_char_p, ctypes.c_size_t]),
    "jk_fused_rope_table_elems": (c_i64, [c_i64, c_i64]),
    "jk_fused_rope_table": (ctypes.c_int, [c_vp, c_i64, c_i64, c_f32]),
    "jk_layer_train_bytes": (ctypes.c_int,
                             [P(LayerConfig), c_i64, c_i64, P(ctypes.c_size_t), P(ctypes.c_size_t)]),
    "jk_layer_fwd": (ctypes.c_int, [P(LayerWeights), P(LayerConfig), c_vp, c_i64, c_i64, c_vp, c_vp, c_vp,
                                    ctypes.c_size_t, c_vp, ctypes.c_size_t, c_vp, c_vp]),
    "jk_layer_bwd": (ctypes.c_int, [P(LayerWeights), P(LayerConfig), c_vp, c_vp, c_i64, c_i64, c_vp, P(LayerGrads),
                                    c_f32, c_vp, ctypes.c_size_t, c_vp, ctypes.c_size_t, c_vp, c_vp]),
    "jk_layer_saved_expert_ids": (ctypes.c_int,
                                  [P(LayerConfig), c_i64, c_i64, c_vp, P(c_vp), P(c_vp)]),
    "jk_model_train_bytes": (ctypes.c_int,
                             [P(ModelConfig), c_i64, c_i64, P(ctypes.c_size_t), P(ctypes.c_size_t)]),
    "jk_model_fwd": (ctypes.c_int, [P(ModelWeights), P(ModelConfig), P(ModelBatch), c_vp, c_vp, c_vp, c_vp, c_vp,
                                    ctypes.c_size_t, c_vp, ctypes.c_size_t, c_vp]),
    "jk_model_saved_layer": (ctypes.c_int,
                             [P(ModelConfig), c_i64, c_i64, c_vp, c_i64, P(c_vp)]),
    "jk_model_saved_logits": (ctypes.c_int,
                              [P(ModelConfig), c_i64, c_i64, c_vp, P(c_vp)]),
    "jk_model_eval_bytes": (ctypes.c_size_t,
                            [P(ModelConfig), c_i64, c_i64]),
    "jk_model_eval": (ctypes.c_int, [P(ModelWeights), P(ModelConfig), c_vp, c_i64, c_i64, c_vp, c_vp, c_vp, c_vp, c_vp,
                                     ctypes.c_size_t, c_vp]),
    # the CUDA runtime (libcudart through the library's dependencies, or the emulated one)
    "cudaMemcpy": (ctypes.c_int, [c_vp, c_vp, ctypes.c_size_t, ctypes.c_int]),
    "cudaDeviceSynchronize": (ctypes.c_int, []),
    "cudaGetErrorName": (ctypes.c_char_p, [ctypes.c_int]),
}
CUDA_MEMCPY_DEFAULT = 4


class Kernels:
    """The library's functions as attributes; call(name, ...) checks the returned cudaError_t."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(os.path.abspath(path))
        missing = []
        for name, (restype, argtypes) in FUNCTIONS.items():
            try:
                fn = getattr(self.lib, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        if missing:
            raise SystemExit("torch_check.py: %s lacks %s (a library older than these bindings?)" % (path, ", ".join(missing)))
        version = self.jk_abi_version()
        if version != ABI_VERSION:
            raise SystemExit("torch_check.py: %s has interface version %d, these bindings are for %d "
                             "(JK_ABI_VERSION): update FUNCTIONS and the structures" % (path, version, ABI_VERSION))
        for cname, struct in STRUCTS.items():
            size = self.jk_struct_size(cname.encode())
            if size != ctypes.sizeof(struct):
                raise SystemExit("torch_check.py: %s in %s is %d bytes, the binding's %s is %d" %
                                 (cname, path, size, struct.__name__, ctypes.sizeof(struct)))

    def call(self, name, *args):
        err = getattr(self, name)(*args)
        if err != 0:
            raise RuntimeError("%s returned %s (%d)" % (name, self.cudaGetErrorName(err).decode(), err))
        return err

    def sync(self, what):
        err = self.cudaDeviceSynchronize()
        if err != 0:
            raise RuntimeError("after %s: %s (%d)" % (what, self.cudaGetErrorName(err).decode(), err))

    def describe(self):
        info = ctypes.create_string_buffer(4096)  # jk_runtime_info_t is 328 bytes
        text = ctypes.create_string_buffer(4096)
        self.jk_runtime_info(info)
        self.jk_runtime_info_describe(info, text, len(text))
        return "%s (compiled for %s)" % (text.value.decode().strip(), self.jk_compiled_architectures().decode())


# ---- helpers --------------------------------------------------------------------------------------------
def ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def device_buffer(nbytes, device):
    """(tensor, pointer) of nbytes bytes aligned to 256 bytes (the saved / scratch buffers' requirement)."""
    t = torch.empty(int(nbytes) + 256, dtype=torch.uint8, device=device)
    p = (t.data_ptr() + 255) // 256 * 256
    return t, ctypes.c_void_p(p)


def copy_from_device(src_ptr, shape, dtype, device, kern):
    """A torch tensor holding a copy of a device array the library gave a pointer to."""
    out = torch.empty(shape, dtype=dtype, device=device)
    kern.call("cudaMemcpy", ptr(out), src_ptr, out.numel() * out.element_size(), CUDA_MEMCPY_DEFAULT)
    kern.sync("cudaMemcpy")
    return out


def nonzero(shape, lo, hi, gen):
    """Uniform magnitudes in [lo, hi] with random signs (never zero), fp32 on the CPU (harness.cuh nonzero)."""
    mag = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return (mag * sign).float()


def activations(rows, cols, gen):
    """harness.cuh activations: rows scaled 1, 1e-4 (eps dominates the RMSNorm), 3.7, 1e3, 0.05, 0.6."""
    scale = torch.tensor([1.0, 1e-4, 3.7, 1e3, 0.05, 0.6])[torch.arange(rows) % 6]
    return nonzero((rows, cols), 1.0 / 64, 2.0, gen) * scale[:, None]


def fill_block(named, D, A, F, gen, prefix=""):
    """layer_testing.cuh random_layer_weights: projections U(0.25, 1.75) / sqrt(fan_in), norms 1 +- U(0.01, 0.5),
    biases +- U(0.01, 0.2), random signs, never zero; bf16."""
    fan = {"moa_o": A, "moe_out": F}
    with torch.no_grad():
        for field, name in zip(WEIGHT_FIELDS, HF_NAMES):
            prm = named[prefix + name]
            if field in ("input_norm", "post_norm"):
                v = 1.0 + nonzero(prm.shape, 0.01, 0.5, gen)
            elif field in ("moa_bias", "moe_bias"):
                v = nonzero(prm.shape, 0.01, 0.2, gen)
            else:
                v = nonzero(prm.shape, 0.25, 1.75, gen) / math.sqrt(fan.get(field, D))
            prm.copy_(v.to(prm.dtype))


def layer_weights_struct(named, prefix=""):
    w = LayerWeights()
    for field, name in zip(WEIGHT_FIELDS, HF_NAMES):
        t = named[prefix + name]
        assert t.dtype == torch.bfloat16 and t.is_contiguous(), name
        setattr(w, field, t.data_ptr())
    return w


def compare(got, ref, rows=None, keep=None):
    """Worst relative RMS error and worst max |error| over the reference's RMS: per row of a [rows, cols] view
    (rows given; keep: a boolean mask of the rows compared) or over the whole tensor. Also: all finite."""
    g = got.detach().to(torch.float64).reshape(rows if rows else 1, -1)
    r = ref.detach().to(torch.float64).reshape(rows if rows else 1, -1)
    if keep is not None:
        g, r = g[keep], r[keep]
    if g.numel() == 0:
        return 0.0, 0.0, True
    finite = bool(torch.isfinite(g).all())
    rms = torch.sqrt((r * r).mean(dim=1)) + 1e-30
    err = g - r
    rel_rms = (torch.sqrt((err * err).mean(dim=1)) / rms).max().item()
    rel_max = (err.abs().max(dim=1).values / rms).max().item()
    return rel_rms, rel_max, finite


def near_ties(logits, k):
    """Tokens whose k-th and (k+1)-th router logits are within NEAR_TIE of the row's logit RMS."""
    n, e = logits.shape
    if k >= e:
        return torch.zeros(n, dtype=torch.bool, device=logits.device)
    lg = logits.to(torch.float64)
    rms = torch.sqrt((lg * lg).mean(dim=1))
    top = lg.topk(k + 1, dim=1).values
    return (top[:, k - 1] - top[:, k]) <= NEAR_TIE * rms


def routed_as(ours, logits, k):
    """Per token: our k experts (int32 [N, k]) are HF's top-k of its logits, as sets."""
    ref = logits.topk(k, dim=1).indices.sort(dim=1).values
    return (ours.long().sort(dim=1).values == ref).all(dim=1)


class Verdicts:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def report(self, ok, name, text, detail=()):
        print("%s %s: %s" % ("PASS" if ok else "FAIL", name, text))
        for line in detail:
            print("    " + line)
        sys.stdout.flush()
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def hf_config(s, attn, **extra):
    return jetmoe_config(s["hidden"], s["experts"], s["top_k"], s["kv_heads"], s["head_dim"], s["ffn"], attn, **extra)


def layer_config(s, rope_ptr, rope_positions, path):
    c = LayerConfig()
    c.hidden, c.num_experts, c.top_k = s["hidden"], s["experts"], s["top_k"]
    c.kv_heads, c.head_dim, c.ffn = s["kv_heads"], s["head_dim"], s["ffn"]
    c.eps = 1e-6              # JetMoeDecoderLayer's two JetMoeRMSNorm (their default eps)
    c.aux_switch_coef = 0.0   # no aux term in the backward (HF's aux outputs are not used)
    c.aux_z_coef = 0.0
    c.rope_table = rope_ptr
    c.rope_max_positions = rope_positions
    c.path = PATHS[path]
    return c


def rope_table(kern, positions, head_dim, device):
    n = kern.jk_fused_rope_table_elems(positions, head_dim)
    table = torch.empty(int(n), dtype=torch.float32, device=device)
    kern.call("jk_fused_rope_table", ptr(table), positions, head_dim, 10000.0)
    kern.sync("jk_fused_rope_table")
    return table


def capture_router_logits(module):
    """Hooks on every JetMoeTopKGating below module (in forward order: per block MoA, then MoE); returns the
    list the fp32 router logits [N, E] are appended to."""
    captured = []
    for m in module.modules():
        if isinstance(m, JetMoeTopKGating):
            m.register_forward_hook(lambda _m, _i, out: captured.append(out[4].detach()))
    return captured


def sync_torch(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- check a: one block, forward and backward -------------------------------------------------------------
def check_layer(kern, a, s, device, verdicts):
    B, T, D, E, k = s["batch"], s["seq"], s["hidden"], s["experts"], s["top_k"]
    Hkv, d, F = s["kv_heads"], s["head_dim"], s["ffn"]
    A, N = Hkv * d, s["batch"] * s["seq"]
    shape = "B%d T%d D%d E%d k%d Hkv%d d%d F%d" % (B, T, D, E, k, Hkv, d, F)
    gen = torch.Generator().manual_seed(a.seed)
    cfg = hf_config(s, a.attn, num_hidden_layers=1, vocab_size=32, max_position_embeddings=T)
    layer = JetMoeDecoderLayer(cfg, layer_idx=0).to(device=device, dtype=torch.bfloat16).eval()
    named = dict(layer.named_parameters())
    fill_block(named, D, A, F, gen)
    captured = capture_router_logits(layer)
    x = activations(N, D, gen).to(torch.bfloat16).reshape(B, T, D).to(device)
    dout = nonzero((B, T, D), 0.01, 1.0, gen).to(torch.bfloat16).to(device)

    # HF forward (bf16; RoPE cos/sin from JetMoeRotaryEmbedding in fp32, cast to bf16 as the model does)
    t0 = time.perf_counter()
    rotary = JetMoeRotaryEmbedding(config=cfg).to(device)
    pos = torch.arange(T, device=device).unsqueeze(0)
    cos, sin = rotary(x, pos)
    mask = None
    if a.attn == "eager":
        mask = torch.full((T, T), float("-inf"), device=device).triu(1).to(torch.bfloat16).reshape(1, 1, T, T)
    xh = x.clone().requires_grad_(True)
    out_hf = layer(xh, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    moa_logits, moe_logits = captured[0], captured[1]
    tie_moa, tie_moe = near_ties(moa_logits, k), near_ties(moe_logits, k)
    excluded = tie_moa | tie_moe
    keep = ~excluded
    dout_used = dout.clone().reshape(N, D)
    dout_used[excluded] = 0  # a near-tie token's routing must not reach dx or the weight gradients
    dout_used = dout_used.reshape(B, T, D)
    (out_hf.float() * dout_used.float()).sum().backward()
    sync_torch(device)
    t_hf = time.perf_counter() - t0
    hf_grads = [named[n].grad for n in HF_NAMES]
    for n, g in zip(HF_NAMES, hf_grads):
        assert g is not None, n
    print("layer %s: HF %s attention, %.1f s; near ties %d (MoA %d, MoE %d) of %d tokens, excluded" %
          (shape, a.attn, t_hf, int(excluded.sum()), int(tie_moa.sum()), int(tie_moe.sum()), N))

    table = rope_table(kern, T, d, device)
    weights = layer_weights_struct(named)
    if a.mutate == "swap-routers":  # proves the check can fail: MoA and MoE router weights exchanged
        weights.moa_router, weights.moe_router = weights.moe_router, weights.moa_router
    for path in a.paths:
        jcfg = layer_config(s, ptr(table), T, path)
        saved_b, scratch_b = ctypes.c_size_t(), ctypes.c_size_t()
        kern.call("jk_layer_train_bytes", ctypes.byref(jcfg), B, T, ctypes.byref(saved_b), ctypes.byref(scratch_b))
        saved_t, saved = device_buffer(saved_b.value, device)
        scratch_t, scratch = device_buffer(scratch_b.value, device)
        out = torch.full((B, T, D), float("nan"), dtype=torch.bfloat16, device=device)
        dx = torch.full((B, T, D), float("nan"), dtype=torch.bfloat16, device=device)
        grads = [torch.full(named[n].shape, float("nan"), dtype=torch.float32, device=device) for n in HF_NAMES]
        gs = LayerGrads(*[g.data_ptr() for g in grads])
        xin, dt = x.contiguous(), dout_used.contiguous()
        sync_torch(device)
        t0 = time.perf_counter()
        kern.call("jk_layer_fwd", ctypes.byref(weights), ctypes.byref(jcfg), ptr(xin), B, T, ptr(out), None,
                  saved, saved_b.value, scratch, scratch_b.value, None, None)
        kern.sync("jk_layer_fwd")
        kern.call("jk_layer_bwd", ctypes.byref(weights), ctypes.byref(jcfg), ptr(xin), ptr(dt), B, T, ptr(dx),
                  ctypes.byref(gs), 0.0, saved, saved_b.value, scratch, scratch_b.value, None, None)
        kern.sync("jk_layer_bwd")
        t_jk = time.perf_counter() - t0
        if a.mutate == "scale-grad":  # proves the check can fail: one weight gradient 10% too large
            grads[WEIGHT_FIELDS.index("moe_in")] *= 1.1
        moa_p, moe_p = c_vp(), c_vp()
        kern.call("jk_layer_saved_expert_ids", ctypes.byref(jcfg), B, T, saved, ctypes.byref(moa_p), ctypes.byref(moe_p))
        moa_ids = copy_from_device(moa_p, (N, k), torch.int32, device, kern)
        moe_ids = copy_from_device(moe_p, (N, k), torch.int32, device, kern)
        # Every token that is not a near tie is routed as HF routes it (MoE: its input depends on the MoA's
        # choice, so a MoA near tie excludes the token there too).
        bad_moa = int((~routed_as(moa_ids, moa_logits, k) & keep).sum())
        bad_moe = int((~routed_as(moe_ids, moe_logits, k) & keep).sum())
        flips = int((~routed_as(moa_ids, moa_logits, k) | ~routed_as(moe_ids, moe_logits, k)).sum())

        ok = bad_moa == 0 and bad_moe == 0
        co = compare(out, out_hf, N, keep)
        cd = compare(dx, xh.grad, N, keep)
        ok = ok and co[2] and co[0] <= FWD_RMS and co[1] <= FWD_MAX
        ok = ok and cd[2] and cd[0] <= BWD_RMS and cd[1] <= BWD_MAX
        detail, worst_rms, worst_name, worst_max = [], -1.0, "", 0.0
        for field, g, hg in zip(WEIGHT_FIELDS, grads, hf_grads):
            cg = compare(g, hg)
            gok = cg[2] and cg[0] <= BWD_RMS and cg[1] <= BWD_MAX
            ok = ok and gok
            detail.append("d%-11s rel rms %.2e  max %.2e%s" % (field, cg[0], cg[1], "" if gok else "  <- over"))
            if cg[0] > worst_rms:
                worst_rms, worst_name = cg[0], field
            worst_max = max(worst_max, cg[1])
        verdicts.report(
            ok, "layer.%s %s" % (path, shape),
            "out rms %.2e max %.2e (tol %.0e / %.2g); dx rms %.2e max %.2e (tol %.0e / %.2g); dW worst rms %.2e (%s) "
            "max %.2e (tol %.0e / %.2g); routed unlike HF outside near ties: MoA %d, MoE %d (differ at %d tokens "
            "in all); %d of %d tokens excluded (near ties); kernels %.1f s" %
            (co[0], co[1], FWD_RMS, FWD_MAX, cd[0], cd[1], BWD_RMS, BWD_MAX, worst_rms, worst_name, worst_max, BWD_RMS,
             BWD_MAX, bad_moa, bad_moe, flips, int(excluded.sum()), N, t_jk), detail)
        del saved_t, scratch_t


# ---- check b: the whole model's logits ----------------------------------------------------------------------
def check_model(kern, a, s, device, verdicts):
    B, T, D, E, k = s["batch"], s["model_seq"], s["hidden"], s["experts"], s["top_k"]
    Hkv, d, F, V, L = s["kv_heads"], s["head_dim"], s["ffn"], s["vocab"], s["model_layers"]
    A, N = Hkv * d, B * T
    shape = "B%d T%d D%d E%d k%d Hkv%d d%d F%d V%d L%d" % (B, T, D, E, k, Hkv, d, F, V, L)
    gen = torch.Generator().manual_seed(a.seed + 1)
    final_eps = 1e-5
    cfg = hf_config(s, a.attn, num_hidden_layers=L, vocab_size=V, max_position_embeddings=T,
                    tie_word_embeddings=False, rms_norm_eps=final_eps)
    with torch.device("meta"):
        model = JetMoeForCausalLM(cfg).to(torch.bfloat16)
    model = model.to_empty(device=device)
    # HF's whole-model bf16 cast also rounds the RoPE inv_freq buffer to bf16; a checkpoint loaded with
    # from_pretrained keeps it fp32: a fresh fp32 rotary embedding, as kernels/bench/peer_model.py does.
    model.model.rotary_emb = JetMoeRotaryEmbedding(config=cfg).to(device)
    model.eval()
    named = dict(model.named_parameters())
    with torch.no_grad():
        named["model.embed_tokens.weight"].copy_(nonzero((V, D), 1.0 / 64, 2.0, gen).to(torch.bfloat16))
        named["lm_head.weight"].copy_((nonzero((V, D), 0.25, 1.75, gen) / math.sqrt(D)).to(torch.bfloat16))
        named["model.norm.weight"].copy_((1.0 + nonzero((D,), 0.01, 0.5, gen)).to(torch.bfloat16))
    for l in range(L):
        fill_block(named, D, A, F, gen, prefix="model.layers.%d." % l)
    captured = capture_router_logits(model)
    ids = torch.randint(0, V, (B, T), generator=gen).to(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        logits_hf = model(input_ids=ids).logits.float().reshape(N, V)
    sync_torch(device)
    t_hf = time.perf_counter() - t0
    assert len(captured) == 2 * L

    table = rope_table(kern, T, d, device)
    jcfg = ModelConfig()
    jcfg.layer = layer_config(s, ptr(table), T, a.paths[0])
    jcfg.vocab, jcfg.num_layers, jcfg.has_embedding, jcfg.has_head = V, L, 1, 1
    jcfg.final_eps, jcfg.recompute = final_eps, 0
    blocks = (LayerWeights * L)(*[layer_weights_struct(named, "model.layers.%d." % l) for l in range(L)])
    w = ModelWeights()
    w.embedding = named["model.embed_tokens.weight"].data_ptr()
    w.layers = blocks
    w.final_norm = named["model.norm.weight"].data_ptr()
    w.lm_head = named["lm_head.weight"].data_ptr()
    ids32 = ids.to(torch.int32).contiguous()
    sync_torch(device)

    # jk_model_eval: the logits
    t0 = time.perf_counter()
    nbytes = kern.jk_model_eval_bytes(ctypes.byref(jcfg), B, T)
    if nbytes == 0:
        raise RuntimeError("jk_model_eval_bytes rejected the configuration")
    scratch_t, scratch = device_buffer(nbytes, device)
    logits = torch.full((N, V), float("nan"), dtype=torch.float32, device=device)
    invalid = torch.full((1,), -1, dtype=torch.int32, device=device)
    kern.call("jk_model_eval", ctypes.byref(w), ctypes.byref(jcfg), ptr(ids32), B, T, None, None, ptr(logits),
              ptr(invalid), scratch, nbytes, None)
    kern.sync("jk_model_eval")
    del scratch_t
    # jk_model_fwd: every block's expert choices (its saved buffers), and its logits, which model.h says are
    # jk_model_eval's bit for bit
    labels = torch.roll(ids32, -1, dims=1).contiguous()
    labels[:, -1] = -100
    batch = ModelBatch(B, T, ids32.data_ptr(), None, labels.data_ptr())
    saved_b, scratch_b = ctypes.c_size_t(), ctypes.c_size_t()
    kern.call("jk_model_train_bytes", ctypes.byref(jcfg), B, T, ctypes.byref(saved_b), ctypes.byref(scratch_b))
    saved_t, saved = device_buffer(saved_b.value, device)
    scratch_t, scratch = device_buffer(scratch_b.value, device)
    loss_rows = torch.empty(N, dtype=torch.float32, device=device)
    kern.call("jk_model_fwd", ctypes.byref(w), ctypes.byref(jcfg), ctypes.byref(batch), None, ptr(loss_rows), None,
              None, saved, saved_b.value, scratch, scratch_b.value, None)
    kern.sync("jk_model_fwd")
    t_jk = time.perf_counter() - t0
    lp = c_vp()
    kern.call("jk_model_saved_logits", ctypes.byref(jcfg), B, T, saved, ctypes.byref(lp))
    fwd_logits = copy_from_device(lp, (N, V), torch.bfloat16, device, kern).float()
    same_as_fwd = bool(torch.equal(fwd_logits, logits))
    ids_ours = []
    for l in range(L):
        lsp, moa_p, moe_p = c_vp(), c_vp(), c_vp()
        kern.call("jk_model_saved_layer", ctypes.byref(jcfg), B, T, saved, l, ctypes.byref(lsp))
        kern.call("jk_layer_saved_expert_ids", ctypes.byref(jcfg.layer), B, T, lsp, ctypes.byref(moa_p),
                  ctypes.byref(moe_p))
        ids_ours.append((copy_from_device(moa_p, (N, k), torch.int32, device, kern),
                         copy_from_device(moe_p, (N, k), torch.int32, device, kern)))
    del saved_t, scratch_t

    # Routing, block by block. `differs`: positions whose block input differs from HF's by more than
    # rounding (a routing difference earlier); a block's routing is compared only elsewhere, and a difference
    # there must be a near tie. A difference at (block, t) changes the block's output at t, and in the next
    # blocks every position >= t of the sequence (attention over t's K/V).
    differs = torch.zeros(B, T, dtype=torch.bool, device=device)
    bad, ties, flips = 0, 0, 0
    for l in range(L):
        moa_lg, moe_lg = captured[2 * l], captured[2 * l + 1]
        moa_ids, moe_ids = ids_ours[l]
        valid = ~differs.reshape(N)
        tie_a, tie_e = near_ties(moa_lg, k), near_ties(moe_lg, k)
        flip_a = ~routed_as(moa_ids, moa_lg, k) & valid
        valid_e = valid & ~flip_a
        flip_e = ~routed_as(moe_ids, moe_lg, k) & valid_e
        bad += int((flip_a & ~tie_a).sum() + (flip_e & ~tie_e).sum())
        ties += int((tie_a & valid).sum() + (tie_e & valid_e).sum())
        flips += int(flip_a.sum() + flip_e.sum())
        out_differs = differs | (flip_a | flip_e).reshape(B, T)
        differs = out_differs if l == L - 1 else torch.cummax(out_differs.int(), dim=1).values.bool()
    keep = ~differs.reshape(N)
    c = compare(logits, logits_hf, N, keep)
    ok = bad == 0 and same_as_fwd and int(invalid.item()) == 0 and c[2] and c[0] <= FWD_RMS and c[1] <= FWD_MAX
    ok = ok and bool(torch.isfinite(loss_rows).all())
    verdicts.report(
        ok, "model %s" % shape,
        "logits rms %.2e max %.2e (tol %.0e / %.2g) over %d of %d positions; eval logits %s jk_model_fwd's; "
        "routing: %d near ties, %d differences from HF (%d not at a near tie), %d positions excluded; "
        "HF %.1f s, kernels %.1f s" %
        (c[0], c[1], FWD_RMS, FWD_MAX, int(keep.sum()), N, "==" if same_as_fwd else "!=", ties, flips, bad,
         int((~keep).sum()), t_hf, t_jk))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", required=True, help="libjetmoe_kernels.so (cuda) or libjetmoe_kernels_emu.so (cpu)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--shape", choices=sorted(SHAPES), default="small",
                   help="small (default; the CPU emulator's) or 8b (JetMoE-8B block sizes, for a GPU)")
    for name in ("batch", "seq", "hidden", "experts", "top_k", "kv_heads", "head_dim", "ffn", "vocab",
                 "model_layers", "model_seq"):
        p.add_argument("--" + name.replace("_", "-"), type=int, dest=name, help="override the shape's " + name)
    p.add_argument("--paths", default="tuned", help="comma-separated jk_layer_path_t: tuned, wgmma, simple")
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="HF attention (default sdpa)")
    p.add_argument("--checks", default="layer,model", help="comma-separated: layer, model")
    p.add_argument("--seed", type=int, default=20240407)
    p.add_argument("--mutate", choices=("none", "swap-routers", "scale-grad"), default="none",
                   help="deliberately wrong inputs to our side, to prove that the layer check fails")
    a = p.parse_args()
    a.paths = [x for x in a.paths.split(",") if x]
    checks = [x for x in a.checks.split(",") if x]
    if any(x not in PATHS for x in a.paths) or not a.paths or any(x not in ("layer", "model") for x in checks):
        p.error("--paths takes tuned, wgmma, simple; --checks layer, model")
    s = dict(SHAPES[a.shape])
    for key in s:
        if getattr(a, key) is not None:
            s[key] = getattr(a, key)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("torch_check.py: no CUDA device (torch.cuda.is_available() is false); exit 77")
        return 77
    kern = Kernels(a.lib)
    emulated = "emulation" in kern.describe()
    if emulated != (device.type == "cpu"):
        p.error("--device %s with %s: cpu needs the emulated library, cuda the real one" % (a.device, a.lib))
    print("torch_check: torch %s, %s; library %s" % (torch.__version__, device if device.type == "cpu" else
                                                     torch.cuda.get_device_name(device), a.lib))
    print("  " + kern.describe())
    torch.manual_seed(a.seed)
    verdicts = Verdicts()
    for name, fn in (("layer", check_layer), ("model", check_model)):
        if name not in checks:
            continue
        try:
            fn(kern, a, s, device, verdicts)
        except RuntimeError as e:
            verdicts.report(False, name, "error: %s" % e)
    print("%d passed, %d failed" % (verdicts.passed, verdicts.failed))
    return 0 if verdicts.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
