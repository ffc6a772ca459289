"""Shared fixtures: tiny generator configs that build and run in milliseconds on the CPU."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from navcuda.models.stylegan2 import Generator, GeneratorConfig
from navcuda.ops import _native


def tiny_config(**overrides) -> GeneratorConfig:
    """A 16x16 generator with 16-32 channels: every code path of the full model, tiny."""
    kw = dict(resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_base=256, channel_max=32)
    kw.update(overrides)
    return GeneratorConfig(**kw)


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """The :func:`tiny_config` factory, for tests that build their own variants."""
    return tiny_config


@pytest.fixture
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config()).eval()
    # Non-zero noise strengths and biases so that every term of the forward pass is exercised.
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test (modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny convolutions are up to ~100x
    slower with 2 OpenMP threads on a small, busy machine such as CI's."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def emu() -> ModuleType:
    """The test-only module running the CUDA kernels on the CPU (``navcuda._C_emu``); skips the
    test where it was not built."""
    try:
        return importlib.import_module("navcuda._C_emu")
    except ImportError as exc:
        pytest.skip(f"test-only module navcuda._C_emu not built (a dev install builds it): {exc}")


@pytest.fixture
def emulated_cuda(emu: ModuleType) -> Iterator[ModuleType]:
    """For the test's duration, native kernel calls on CPU tensors run navcuda._C's CUDA
    launchers and kernels on the CPU emulator (:func:`navcuda.ops._native.emulated_cuda`);
    skips where the test-only module navcuda._C_emu was not built."""
    with _native.emulated_cuda():
        yield emu


@pytest.fixture(params=["cpu", "cuda-emulated"])
def native_path(request: pytest.FixtureRequest) -> str:
    """Runs a test of CPU tensors twice: with the native kernels as the C++ CPU kernels, then as
    the CUDA path on the CPU emulator (:func:`emulated_cuda`), so whole-model checks cover the
    CUDA code on machines without a GPU."""
    if request.param == "cuda-emulated":
        request.getfixturevalue("emulated_cuda")
    return request.param


# ----------------------------------------------------------------- a generic torch generator
class TinyConvGenerator(nn.Module):
    """Every layer kind navcuda shifts in a wrapped module: a transposed conv, a spectral-normed
    conv (hook-based), a grouped conv with reflect padding, a weight-normed conv
    (parametrisation) and a plain output conv. Optional class conditioning."""

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(8, 16 * 4 * 4)
        self.embed = nn.Embedding(max(num_classes, 1), 16 * 4 * 4)
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.sn = nn.utils.spectral_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect")
        self.wn = nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = self.fc(z)
        if label is not None:
            x = x + self.embed(label)
        x = torch.relu(x.view(-1, 16, 4, 4))
        x = torch.relu(self.up(x))
        x = torch.relu(self.sn(x))
        x = torch.relu(self.grouped(x)) + x
        x = torch.relu(self.wn(x))
        return torch.tanh(self.out(x))


def _tiny_sampler(n: int, seed: int, label=None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {"z": torch.randn(n, 8, generator=gen, dtype=torch.float64)}
    return out if label is None else {**out, "label": label}


def _tiny_conv_model(seed: int = 0, num_classes: int = 0) -> TinyConvGenerator:
    torch.manual_seed(seed)
    m = TinyConvGenerator(num_classes).double()
    m.eval()
    with torch.no_grad():  # a few power iterations so that the spectral norm's u, v are real
        m.train()
        for _ in range(3):
            m(torch.randn(2, 8, dtype=torch.float64))
        m.eval()
    return m


@pytest.fixture
def tiny_conv_model():
    """Factory ``(seed=0, num_classes=0) -> TinyConvGenerator`` (float64, eval)."""
    return _tiny_conv_model


@pytest.fixture(name="tiny_sampler")
def tiny_sampler_fixture():
    """The sampler of :class:`TinyConvGenerator`: ``{"z": [n, 8]}`` (+ ``"label"``)."""
    return _tiny_sampler


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """An empty folder that the kernel refuses to create files in, for this process too: mode
    0o500 for a normal user; as root (who writes through modes), the immutable attribute
    (``chattr +i``), which binds root as well. Checked by a probe write; skipped only where
    neither works (root without ``chattr``, on a file system without the attribute, or without
    CAP_LINUX_IMMUTABLE)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    chattr = shutil.which("chattr")
    if os.geteuid() != 0:
        folder.chmod(0o500)
    elif chattr is None or subprocess.run([chattr, "+i", folder], capture_output=True).returncode:
        pytest.skip("root writes through modes, and chattr +i (immutable) is unavailable here")
    try:
        try:
            (folder / ".probe").touch()
        except PermissionError:
            pass
        else:
            (folder / ".probe").unlink()
            pytest.skip(f"{folder} could not be made read-only on this file system")
        yield folder
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o700)
        else:
            subprocess.run([chattr, "-i", folder], check=True)


#: Headless Chromium for the browser tests (``chromium`` fixture).
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium(tmp_path: Path):
    """``chromium(window="1280,900", prefs=None)`` starts headless Chromium through Selenium and
    chromedriver (real DOM, real events), quit after the test. Skipped, saying what is missing,
    without selenium, chromium or chromedriver or when Chromium cannot start
    (``.ci/install-browser`` installs them)."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (run .ci/install-browser)"
    )
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    names = ("chromium", "chromium-browser", "google-chrome")
    browser = next(filter(None, map(shutil.which, names)), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip(
            f"chromium ({browser or 'missing'}) and chromedriver ({driver_path or 'missing'}) "
            "are needed: run .ci/install-browser"
        )
    drivers = []

    def start(window: str = "1280,900", prefs: dict | None = None):
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        profile = tmp_path / f"profile{len(drivers)}"
        for flag in [*CHROMIUM_FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"]:
            opts.add_argument(flag)
        if prefs:
            opts.add_experimental_option("prefs", prefs)
        try:
            # An explicit driver path: Selenium Manager never downloads anything.
            driver = webdriver.Chrome(options=opts, service=Service(driver_path))
        except WebDriverException as exc:
            pytest.skip(f"chromium could not be started: {exc.msg}")
        drivers.append(driver)
        return driver

    try:
        yield start
    finally:
        for d in drivers:
            d.quit()


@pytest.fixture
def svd_file(tiny_generator, tmp_path: Path):
    """``svd_file(amplitudes)``: the top SVD directions of layer 3 of ``tiny_generator``, one per
    amplitude (NaN: none), saved to ``tmp_path / "dirs.nav"``; returns the file's path."""
    from navcuda.discover import discover

    def make(amplitudes) -> Path:
        ds = discover(tiny_generator, 3, method="svd", k=len(amplitudes), calibrate=False)
        ds.amplitudes = torch.tensor(amplitudes, dtype=torch.float64)
        return ds.save(tmp_path / "dirs.nav")

    return make


@pytest.fixture(scope="session")
def vgg_file(tmp_path_factory):
    """A randomly initialised torchvision vgg16 state dict (features only, plus one classifier
    tensor as in the real file) saved under torchvision's checkpoint name."""
    import torchvision

    from navcuda.metrics.perceptual import BACKBONE_FILES

    torch.manual_seed(1)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("hub") / BACKBONE_FILES["vgg"]
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="session")
def lpips_vgg(vgg_file):
    from navcuda.metrics.perceptual import LPIPSMetric

    return LPIPSMetric("vgg", backbone_path=vgg_file[0])
