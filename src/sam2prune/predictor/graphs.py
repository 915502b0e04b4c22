"""Running fixed-shape work as CUDA graphs: the capture and replay shared by the static tracking
step and the image encoder, and the weights cast once for them under autocast.

A CUDA graph records the kernels of one run of a body and replays them with one launch, so a
frame is no longer bound by the host launching ~1,200 kernels one by one. What a graph reads and
writes must stay at the same addresses: the body runs on input tensors of its own (copied into
before each replay) and its outputs are the same tensors at every replay (cloned after it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

log = logging.getLogger("sam2prune")

# the layers whose weights autocast casts to its lower-precision dtype at every call
CAST_MODULES = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in effect for ``device``'s type, or None."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _autocast_without_cache(device: torch.device) -> AbstractContextManager:
    """The autocast in effect, with its weight-cast cache off: casts captured into a graph must
    read the weights themselves, not tensors cached outside the graph."""
    dtype = autocast_dtype(device)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def clone_outputs(outputs: dict, *, constant: tuple[str, ...] = ()) -> dict:
    """A copy of a dict of tensors (or lists of tensors) in tensors of its own; a tensor found
    twice is copied once (the copy keeps the aliasing), the values of ``constant`` keys (the same
    at every replay) are not copied."""
    copies: dict[int, torch.Tensor] = {}

    def copy(x: torch.Tensor) -> torch.Tensor:
        if id(x) not in copies:
            copies[id(x)] = x.clone()
        return copies[id(x)]

    def copied(key: str, value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(value, list):
            return list(value) if key in constant else [copy(x) for x in value]
        return value if key in constant else copy(value)

    return {key: copied(key, value) for key, value in outputs.items()}


def warm_up(body: Callable[[], dict], *, written: Sequence[torch.Tensor] = (), runs: int = 2) -> None:
    """Run ``body`` ``runs`` times (lazy caches filled, kernels chosen) and put the tensors it
    writes besides its outputs (``written``) back as they were: the run it warms up for is still
    to come."""
    saved = [tensor.clone() for tensor in written]
    try:
        for _ in range(runs):
            body()
    finally:  # also when a run fails: the eager run that replaces the capture reads them
        for tensor, value in zip(written, saved, strict=True):
            tensor.copy_(value)


def capture_graph(
    body: Callable[[], dict], device: torch.device, written: Sequence[torch.Tensor]
) -> tuple[torch.cuda.CUDAGraph, dict]:
    """Warm up on a side stream (``warm_up``), then capture one run of ``body`` (capturing runs
    nothing). Returns the graph and the tensors its replays write. ``device`` is made current
    for both: a capture begins on the current device, which need not be the model's (cuda:N)."""
    with torch.cuda.device(device):
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), _autocast_without_cache(device):
            warm_up(body, written=written)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        capture_stream = torch.cuda.Stream(device)
        # torch.cuda.graph ends the capture before it restores the current stream: a capture the
        # body broke (a host sync) raises there and would leave the capture stream current for
        # every later kernel of the process; the outer context restores it however it ends
        with (
            torch.cuda.stream(torch.cuda.current_stream(device)),
            torch.cuda.graph(graph, stream=capture_stream, capture_error_mode="thread_local"),
            _autocast_without_cache(device),
        ):
            outputs = body()
    return graph, outputs


class GraphRunner:
    """Runs a body of fixed shapes: eagerly, or (``capture``) captured as a CUDA graph on its
    first run and replayed after. A capture that fails is logged and kept (``capture_error``)
    and the body runs eagerly from then on, with the same results.

    Args:
        what: what the body computes, for the log.
        device: the CUDA device of a captured body.
        capture: capture and replay (else every run is eager).
        constant: outputs whose values are the same at every run (handed out as the graph's
            own tensors, not copied: whoever reads them must not write them).
    """

    def __init__(self, what: str, device: torch.device, *, capture: bool, constant: tuple[str, ...] = ()) -> None:
        self.what = what
        self.device = device
        self.capture = capture
        self.constant = constant
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict | None = None
        self.capture_error: str | None = None

    def __call__(self, body: Callable[[], dict], *, written: Sequence[torch.Tensor] = ()) -> dict:
        """The outputs of one run of ``body``, tensors of their own.

        Args:
            written: the tensors the body writes besides its outputs (a capture's warm-up puts
                them back as they were).
        """
        if not self.capture:
            return body()
        if self.graph is None:
            try:
                self.graph, self.outputs = capture_graph(body, self.device, written)
            except Exception as error:  # what the body writes is as it was: the eager run gives the same
                torch.cuda.synchronize(self.device)
                self.capture, self.capture_error = False, f"{type(error).__name__}: {error}"
                log.warning("CUDA graph capture of %s failed, running it eagerly: %s", self.what, error)
                return body()
            log.info("captured a CUDA graph of %s", self.what)
        self.graph.replay()
        assert self.outputs is not None
        return clone_outputs(self.outputs, constant=self.constant)  # the graph writes them again at its next replay


class WeightCasts:
    """The float32 weights and biases of a model's linear and convolution layers, cast once to
    autocast's lower-precision dtype.

    Under autocast these layers cast their weights at every call. A graph is captured with
    autocast's cache off (as capturing needs), so it would replay hundreds of weight casts every
    frame. While ``swapped`` is entered, the layers hold the casts instead and find their weights
    already in the dtype: they cast nothing, and compute on the same values (autocast's cast is
    the same ``to(dtype)``), so the results are the same bits. ``refresh`` casts again, into the
    same tensors, what was changed in place since (``load_state_dict``): graphs that read the
    casts read the new values.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.entries: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = [
            (module, name, parameter)
            for module in model.modules()
            if isinstance(module, CAST_MODULES)
            for name, parameter in module.named_parameters(recurse=False)
            if parameter.dtype == torch.float32
        ]
        # normal tensors (not inference tensors): refresh writes them in or out of inference mode
        with torch.inference_mode(False), torch.no_grad():
            self.casts = [
                torch.nn.Parameter(parameter.detach().to(dtype), requires_grad=False)
                for _, _, parameter in self.entries
            ]
        self.versions = [parameter._version for _, _, parameter in self.entries]

    def refresh(self) -> None:
        """Cast again the weights changed in place since they were cast."""
        versions = [parameter._version for _, _, parameter in self.entries]
        if versions == self.versions:
            return
        with torch.no_grad():
            for (_, _, parameter), cast, then, now in zip(
                self.entries, self.casts, self.versions, versions, strict=True
            ):
                if then != now:
                    cast.copy_(parameter.detach())
        self.versions = versions

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """While inside, the layers hold the casts as their weights.

        Raises:
            RuntimeError: a layer's weight was replaced by another tensor since the casts were made.
        """
        swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
        try:
            for (module, name, parameter), cast in zip(self.entries, self.casts, strict=True):
                if module._parameters[name] is not parameter:
                    raise RuntimeError(
                        f"a weight of a {type(module).__name__} ({name}) was replaced after the static step cast "
                        "it: call set_static_step again"
                    )
                module._parameters[name] = cast
                swapped.append((module, name, parameter))
            yield
        finally:
            for module, name, parameter in swapped:
                module._parameters[name] = parameter


class StaticImageEncoder:
    """The image encoder on one fixed input tensor (the frame is copied in), run eagerly or as a
    CUDA graph (``GraphRunner``). Its input shape never changes while a video is tracked.

    Args:
        shape, dtype, device: of the frames (``[1, 3, S, S]``).
        capture: replay as a CUDA graph.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, *, capture: bool) -> None:
        with torch.inference_mode(False):  # written in or out of inference mode
            self.image = torch.zeros(shape, dtype=dtype, device=device)
        # the position encodings depend on the shape alone: not copied after each replay (at
        # 1024 px the finest level is 64 MiB)
        self.runner = GraphRunner(
            f"the image encoder on {list(shape)}", device, capture=capture, constant=("vision_pos_enc",)
        )
        self.runs = 0

    def run(self, body: Callable[[], dict], image: torch.Tensor) -> dict:
        """``body()`` (the encoder on ``self.image``) with ``image`` in ``self.image``."""
        self.image.copy_(image)
        self.runs += 1
        return self.runner(body)  # the encoder writes nothing but its outputs
