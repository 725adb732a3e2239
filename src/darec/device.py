"""Where computation runs: the one place that turns a ``device`` setting into a torch device,
and a ``precision`` setting into an autocast context."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import psutil
import torch
from torch import nn

from darec.config import ConfigError

log = logging.getLogger("darec")
# Below this many frozen pretrained parameters compiling costs more than it saves (tests' tiny models).
COMPILE_MIN_PARAMETERS = 10_000_000


def parse_device(name: str) -> torch.device:
    """A device's spelling, checked (whether this machine has it is :func:`resolve_device`'s part)."""
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU) or a named device, refused clearly when absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = parse_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count or 'no'} CUDA device{'s' if count != 1 else ''}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r}: MPS is not available here")
    return device


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: the driver's count on CUDA, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def fast_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16): there bf16
    matmuls run several times faster than fp32; elsewhere they are emulated and slower."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # torch's own CPU checks
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:
                pass
    try:  # older torch: the kernel's CPU flags (Linux)
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(device: torch.device, precision: str, model: nn.Module | None = None) -> str:
    """``fp32`` or ``bf16``. ``auto``: bf16 on CUDA with bf16 support, and on a CPU with native
    bf16 matrix units for a model with a frozen pretrained backbone (there it trains DARec
    faster at fp32's accuracy: bench/results/llm_throughput.md, precision_parity.md); fp32
    elsewhere (emulated bf16 is slower, and small models from scratch gain nothing)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and model is not None and pretrained_parameters(model) and fast_cpu_bf16():
        return "bf16"
    return "fp32"


def loaded_precision(device: torch.device, trained: str) -> str:
    """The precision a finished run's model scores in on ``device``: the one it was trained in
    (``trained``), except bf16 on a CPU without native bf16 matrix units, where fp32: bf16
    matmuls are emulated there, 30-55 times slower than fp32 (a model trained on a machine with
    AMX, served on a laptop), and fp32 differs from bf16 only by its rounding."""
    if trained == "bf16" and device.type == "cpu" and not fast_cpu_bf16():
        log.info("trained in bf16; scoring in fp32 here (this CPU has no native bf16 matrix units)")
        return "fp32"
    return trained


def pretrained_parameters(model: nn.Module) -> set[str]:
    """Names of the frozen pretrained parameters (the ones a model rebuilds from their source)."""
    return set(getattr(model, "rebuilt_state_keys", set)())


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of the ``precision`` setting on ``device`` (a no-op for fp32)."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def apply_precision(model: nn.Module, device: torch.device, precision: str) -> str:
    """Hold ``model``'s frozen pretrained parameters (an LLM backbone: what its
    ``rebuilt_state_keys`` names) in bf16 when the precision resolves to bf16, so autocast
    does not cast them again at every step; everything else (trainable parameters, and so
    the optimizer state; a frozen collaborative model) stays fp32. Returns the resolved precision, also
    kept as ``model.precision``: a model holding bf16 weights runs them under autocast itself,
    so it scores the same in training, evaluation and serving."""
    resolved = resolve_precision(device, precision, model)
    if resolved == "bf16" and device.type == "cpu" and not fast_cpu_bf16():
        # Asked for (or a run trained in bf16 loaded here): emulated bf16 matmuls ran 30-55 times slower
        # than fp32 on an AVX2-only CPU (bench/results/llm_throughput.md), so say so before it crawls.
        log.warning("precision=bf16 on a CPU without native bf16 matrix units (AMX-BF16 or AVX512-BF16): its "
                    "bf16 matmuls are emulated, far slower than fp32 here; precision=auto (or fp32) avoids that")
    if resolved == "bf16":
        pretrained = pretrained_parameters(model)
        for name, p in model.named_parameters():
            if name in pretrained and p.is_floating_point():
                p.data = p.data.to(torch.bfloat16)
    model.precision = resolved
    return resolved


def adamw(params: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where every parameter lives on a CPU or CUDA device
    (one kernel for all parameters instead of a loop over hundreds of small LoRA tensors;
    the same update)."""
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def apply_compile(model: nn.Module, device: torch.device, setting: str) -> bool:
    """Compile ``model``'s repeated blocks in place (``model.compile_regions()``: an LLM's decoder
    layers), so their elementwise work (norms, rotary, SiLU gate, casts) runs fused. Regional:
    every layer shares one compilation, about 20 s on a CPU. ``auto``: on for a pretrained
    backbone of at least 10M parameters on a CPU or CUDA device where compiling works (probed
    once); ``on``: always; ``off``: never. Returns whether it compiled. (DARec at 30 SmolLM2
    layers on a CPU, over the same path eager: training 1.9x with darec's attention, scoring
    1.6x in the latest run, 2.4x and 1.9x on an earlier machine; bench/results/llm_throughput.md.)"""
    regions = list(getattr(model, "compile_regions", list)())
    if setting == "off" or not regions:
        return False
    if setting == "auto":
        pretrained = pretrained_parameters(model)
        frozen = sum(p.numel() for n, p in model.named_parameters() if n in pretrained)
        if frozen < COMPILE_MIN_PARAMETERS or device.type not in ("cpu", "cuda") or not _compiler_works(device):
            return False
    # Compiled code is cached per function, shared by every model of the process, and a function
    # past torch's recompile limit (8) runs eager from then on, with a warning: the benchmarks that
    # train several models in one process (a plan search, a plan under several settings) hit it.
    # A model compiled anew starts from an empty cache.
    torch.compiler.reset()
    # Layers share one compiled function, but layers with different adapters (a searched plan, a
    # MixRec mixture) guard on different hooks: each kind needs its own compilations, for each
    # grad mode (training, evaluation) and each size that turns out to vary (batch, length, a
    # router's weights). A 2-layer MixRec plan needed over 16 on scientific. Past the limit a
    # layer runs eager, so the limit is generous: sizes become dynamic after their first change.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64, 8 * len(regions))
    # A tensor a module holds as a plain attribute (a MixRec router's weights for this forward,
    # which its experts read) is taken as fixed in size by default, so every new batch or length
    # compiled the layers again: 22 times for 18 history lengths on the tiny backbone. Such
    # tensors get dynamic sizes as any input does (parameters and buffers stay fixed).
    torch._dynamo.config.force_nn_module_property_static_shapes = False
    for region in regions:
        region.compile()
    return True


def _compiler_works(device: torch.device) -> bool:
    """Whether torch.compile runs here (on a CPU it needs a C++ compiler): a tiny function,
    compiled once per process."""
    if device.type not in _COMPILER_WORKS:
        works = device.type != "cpu" or bool(shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"))
        if works:
            try:
                torch.compile(lambda x: x * 2 + 1)(torch.ones(4, device=device))
            except Exception as exc:  # noqa: BLE001  (any failure means: run eager)
                log.warning("torch.compile does not work here (%s): running eager", str(exc).splitlines()[0][:200])
                works = False
        _COMPILER_WORKS[device.type] = works
    return _COMPILER_WORKS[device.type]


_COMPILER_WORKS: dict[str, bool] = {}
