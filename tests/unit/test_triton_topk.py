"""The Triton top-k kernel matches the torch reference exactly, in Triton's interpreter on CPU.

Inputs are fresh random data every run. The seed is printed here and named in every failure;
rerun one with TOPK_TEST_SEED=<seed>. The interpreter is slow, so shapes and blocks are small
(block sizes are overridden through top_abs_triton's tuning keywords).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before massive.kernels.triton_topk is imported: run on CPU

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip(
    "triton", reason="triton is not installed (pip install -e .[test]): the Triton top-k kernel cannot be tested"
)

from massive.kernels.topk import top_abs, top_abs_rows, top_abs_torch  # noqa: E402
from massive.kernels.triton_topk import interpreted, row_layout, top_abs_triton  # noqa: E402

if interpreted():
    DEVICE = "cpu"
elif torch.cuda.is_available():  # the kernel module was imported compiled earlier in this run
    DEVICE = "cuda"
else:
    pytest.skip(
        "massive.kernels.triton_topk was imported without TRITON_INTERPRET=1 and there is no GPU",
        allow_module_level=True,
    )

SEED = int(os.environ.get("TOPK_TEST_SEED") or random.SystemRandom().randrange(2**31))
print(f"test_triton_topk: seed {SEED} (rerun with TOPK_TEST_SEED={SEED})")
FIELDS = ("values", "signed", "indices", "dim_max", "token_max")


@pytest.fixture(autouse=True)
def _each_test():
    print(f"seed {SEED}: rerun with TOPK_TEST_SEED={SEED}")  # shown with any failure
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rng(salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(SEED * 1009 + salt)


def randn(shape, g, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(dtype).to(DEVICE)


def small_tuning(g: torch.Generator, k: int) -> dict:
    """Small random blocks, programs and merge chunks, so several of each are exercised."""

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    buf = 1 << max(0, k - 1).bit_length()
    return dict(
        block_r=pick([1, 2, 4]), block_d=pick([2, 4, 8]), num_programs=pick([1, 2, 3]), chunk=pick([buf, 2 * buf])
    )


def check(x: torch.Tensor, k: int, **tuning) -> None:
    where = f"seed={SEED} shape={tuple(x.shape)} stride={x.stride()} dtype={x.dtype} k={k} tuning={tuning}"
    want = top_abs_torch(x, k)
    try:
        got = top_abs_triton(x, k, **tuning)
    except Exception as e:
        raise AssertionError(f"top_abs_triton raised {e!r} ({where})") from e
    for name in FIELDS:
        a, b = getattr(want, name), getattr(got, name)
        assert (b.dtype, b.shape) == (a.dtype, a.shape), f"{name}: {b.dtype} {b.shape} {where}"
        assert torch.equal(a, b), f"{name} differs ({where}):\n torch  {a[:12]}\n triton {b[:12]}"


def test_random_shapes_and_k():
    g = rng(1)
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    for _ in range(3):
        ndim = int(torch.randint(1, 4, (1,), generator=g))
        shape = [int(v) for v in torch.randint(1, 12, (ndim,), generator=g)]
        dtype = dtypes[int(torch.randint(3, (1,), generator=g))]
        x = randn(shape, g, dtype)
        k = int(torch.randint(1, min(x.numel(), 24) + 1, (1,), generator=g))
        check(x, k, **small_tuning(g, k))


@pytest.mark.parametrize("which", ["k=1", "k=D", "k>tile", "k=numel"])
def test_k_edges(which):
    g = rng(2)
    x = randn((7, 9), g)
    k = {"k=1": 1, "k=D": 9, "k>tile": 21, "k=numel": 63}[which]
    check(x, k, block_r=2, block_d=4, num_programs=2, chunk=max(16, 1 << (k - 1).bit_length()))


def test_k_1024():
    g = rng(3)
    x = randn((32, 32), g, torch.bfloat16)
    check(x, 1024, block_r=4, block_d=32, num_programs=1)


def test_ties():
    g = rng(4)
    x = torch.randint(-2, 3, (9, 10), generator=g).float().to(DEVICE)  # 5 values, many ties
    n_top = int((x.abs() == 2).sum())
    for k in (max(1, n_top - 3), n_top + 5):  # cut inside a tie group
        check(x, k, **small_tuning(g, k))
    check(torch.zeros(5, 6, device=DEVICE), 4, block_r=2, block_d=4, num_programs=2, chunk=4)
    # stride 0: every row is the same, so every value is tied across rows
    base = randn((1, 3, 6), g).round()
    check(base.expand(4, 3, 6), 7, block_r=2, block_d=4, num_programs=3, chunk=8)


def test_inf():
    g = rng(5)
    x = randn((6, 11), g)
    flat = x.view(-1)
    pos = torch.randperm(x.numel(), generator=g)[:5].to(DEVICE)
    flat[pos[:3]] = float("inf")
    flat[pos[3:]] = float("-inf")
    for k in (4, 9):  # all the infs, or some of them
        check(x, k, **small_tuning(g, k))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    g = rng(6)
    x = randn((5, 3, 7), g, dtype) * 300  # fp16 keeps its range; bf16 rounds to few values (ties)
    check(x, 6, **small_tuning(g, 6))


VIEWS = {
    "transpose": lambda t: t.transpose(0, 1),  # rows in two strided dims
    "slices": lambda t: t[:, ::2, 1::3],  # feature stride 3
    "feature stride": lambda t: t[..., ::2],
    "2d transposed": lambda t: t[0].t(),  # row stride 1
    "no 2-dim layout": lambda t: t.expand(2, -1, -1, -1).permute(2, 0, 1, 3)[:, :, ::2],
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_non_contiguous(view):
    g = rng(7)
    x = VIEWS[view](randn((4, 6, 10), g))
    assert not x.is_contiguous()
    if view == "no 2-dim layout":
        assert row_layout(x) is None  # copied to contiguous memory before the kernel
    check(x, 5, **small_tuning(g, 5))


@pytest.mark.parametrize("shape", [(1,), (1, 1, 1)])
def test_one_element(shape):
    x = torch.full(shape, -2.5, device=DEVICE)
    check(x, 1, **({} if len(shape) == 1 else dict(block_r=1, block_d=1, num_programs=1, chunk=1)))


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_raises(dtype):
    g = rng(8)
    x = randn((5, 9), g, dtype)
    x.view(-1)[int(torch.randint(1, x.numel(), (1,), generator=g))] = float("nan")  # not at [0, 0], set to inf below
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN"):
        top_abs_triton(x, 3, block_r=2, block_d=4, num_programs=2, chunk=4)
    row = x[:1].clone()  # through the dispatch, default launch (one row: one program, quicker)
    row[0, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        top_abs(row, 3, backend="triton")


def test_several_launches():
    g = rng(9)
    x = randn((3, 5, 6), g)
    x[2, 4, 5] = x.abs().max() * 2  # the top value in the last launch, ties across launches:
    x[1, 0, :] = 7.0
    x[2, 0, :] = -7.0
    for k in (8, 30):  # 30: more than one launch's 24 elements
        check(x, k, block_r=2, block_d=4, num_programs=2, chunk=32, max_launch_numel=24)


def test_exact_counts_match_brute_force_with_more_planted_entries_than_k():
    """The kernel's counting reduction: entries above each threshold, in total and per dim, exactly
    as a brute-force count and the torch path, on random data with far more planted entries than k,
    over several programs, tiles and launches."""
    g = rng(12)
    for launch in (None, 40):
        x = randn((3, 7, 10), g)
        hot = torch.randperm(x.numel(), generator=g)[:50]
        x.view(-1)[hot] = (300.0 * (1 + torch.rand(50, generator=g))).to(DEVICE) * torch.sign(
            torch.randn(50, generator=g)
        ).to(DEVICE)
        above, dim_above = [100.0, 0.5, 450.0], [6.0, 400.0]
        extra = {} if launch is None else {"max_launch_numel": launch}
        got = top_abs_triton(x, 4, count_above=above, dim_count_above=dim_above, **small_tuning(g, 4), **extra)
        a = x.abs().float()
        want = torch.tensor([int((a > t).sum()) for t in above])
        want_dims = torch.stack([(a.reshape(-1, 10) > t).sum(0) for t in dim_above])
        assert torch.equal(got.counts.cpu(), want) and torch.equal(got.dim_counts.cpu(), want_dims), (
            f"seed={SEED} launch={launch}"
        )
        assert got.counts[0] == 50 > 4  # 50 pass, the top-4 keeps 4
        ref = top_abs_torch(x, 4, above, dim_above)
        assert torch.equal(ref.counts, got.counts) and torch.equal(ref.dim_counts, got.dim_counts)
        for name in FIELDS:
            assert torch.equal(getattr(ref, name), getattr(got, name)), f"{name} seed={SEED}"
    rows = top_abs_rows(x, 4, backend="triton", count_above=torch.tensor([[100.0], [400.0], [0.0]]))
    assert rows.counts.shape == (3, 1) and rows.counts[2, 0] == int((x[2] != 0).sum())


def test_dispatch():
    g = rng(10)
    x = randn((1, 2, 14), g)  # the default launch gives each row a program: keep rows few
    got = top_abs(x, 3, backend="triton")
    want = top_abs_torch(x, 3)
    for name in FIELDS:
        assert torch.equal(getattr(got, name), getattr(want, name)), f"{name} seed={SEED}"
    with pytest.raises(TypeError, match="float32"):
        top_abs_triton(x.double(), 3)


def test_default_launch_config():
    g = rng(11)
    check(randn((1, 300), g, torch.bfloat16), 5)  # one row: one program (sorts of 256 are slow)


def test_capture_through_the_kernel_matches_the_torch_path():
    """The capture's statistics are the same whichever backend computes them."""
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from massive.measure.capture import capture

    import tiny

    # two blocks, not tiny's four: each launch of the interpreted kernel takes about 2 s here
    config = tiny.config("llama")
    config.num_hidden_layers = 2
    torch.manual_seed(0)
    model = tiny.plant(AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval(), layer=1, dim=7)
    ids = tiny.sequences(2, 12)
    with torch.inference_mode():
        results = {backend: capture(model, ids, k=8, backend=backend) for backend in ("torch", "triton")}
    assert results["torch"].n_layers == 2 and results["torch"].topk["abs_value"].max() > 100  # the planted one
    for table in ("layer_stats", "topk", "dim_max"):
        pd.testing.assert_frame_equal(
            getattr(results["torch"], table), getattr(results["triton"], table), check_exact=True
        )
