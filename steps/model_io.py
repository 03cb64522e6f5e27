"""What goes into a model and what its answer means, read from its MLM item.

Before ``predict``: the bands in the model's order (by the imagery's band descriptions where
they name the MLM bands, else as stored), ``value_scaling`` (``min-max``, ``z-score``, ``clip``,
``clip-min``, ``clip-max``, ``offset``, ``scale``; one object for every band or one per band),
no-data pixels set to 0 after scaling, the cast to ``input.data_type``, and a resize to a fixed
``input.shape`` by ``resize_type`` (``pad``, ``interpolation-nearest``,
``interpolation-linear``) when the model takes one size only.

After it, the first ``mlm:output`` says what the answer is:

- **class values**: no class dimension and an integer ``result.data_type``: taken as they are;
- **per-class scores**: a class dimension (``class``, ``classes``, ``channel`` or ``channels`` in
  ``result.dim_order``) of size > 1: the arg-max, channel ``i`` being the ``i``-th of
  ``classification:classes`` (its index when the item lists none);
- **one score**: a class dimension of size 1, or none and a float ``result.data_type``: above
  ``geomlops:threshold`` (default 0.5) is the second class listed (or 1), else the first (or 0).

The halo read around every block is ``geomlops:halo`` of the input (the model's receptive-field
radius), unless the workflow passes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from catalog_sync.band_expression import BandExpression, parse
from catalog_sync.mlm import ModelInput, ModelOutput, ModelSpec, ValueScaling
from geomlops.errors import GeomlopsError, ImageryMismatchError, InvalidModelItemError

#: class value written where the imagery has no data
NODATA_CLASS = 255
#: the class that is not a feature (clear sky, no building, dry land)
BACKGROUND_CLASS = 0
#: halo when neither the item nor the workflow gives one (a per-pixel model needs none)
DEFAULT_HALO = 16
#: ``geomlops:threshold`` when the item gives none
DEFAULT_THRESHOLD = 0.5
CLASS_DIMENSIONS = ("class", "classes", "channel", "channels")
RESIZE_TYPES = ("pad", "interpolation-nearest", "interpolation-linear")
_INPUT = "$.properties['mlm:input'][0]"
_OUTPUT = "$.properties['mlm:output'][0]"


@dataclass(frozen=True)
class ModelIO:
    """How arrays are prepared for one model and how its answers become class values."""

    bands: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    """The imagery's bands read: ``bands`` but the derived ones, then those they read."""
    derived: tuple[tuple[str, BandExpression], ...] = ()
    """The bands computed from ``sources`` by an expression, by name."""
    data_type: str = "float32"
    scaling: tuple[ValueScaling, ...] = ()
    size: tuple[int, int] | None = None
    """The fixed (height, width) the model takes; None: any."""
    resize_type: str | None = None
    halo: int = DEFAULT_HALO
    class_axis: int | None = None
    """Axis of the class dimension in the answer (batch first); None: no class dimension."""
    scores: bool = False
    """Without a class dimension: whether the answer is one score (a float type)."""
    class_values: tuple[int, ...] = ()
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, halo: int | None = None) -> ModelIO:
        """The model's I/O from its MLM spec; ``halo`` overrides the item's ``geomlops:halo``.

        Raises:
            InvalidModelItemError: a scaling or resize the item asks for that geomlops cannot
                apply, or an output shape it cannot read (the field named).
        """
        if not spec.inputs or not spec.outputs:
            raise InvalidModelItemError(f"model {spec.id}: the MLM item needs an mlm:input and an mlm:output")
        return cls.from_parts(spec.inputs[0], spec.outputs[0], halo=halo)

    @classmethod
    def from_parts(
        cls, model_input: ModelInput, output: ModelOutput | None, *, halo: int | None = None
    ) -> ModelIO:
        """As :meth:`from_spec`, from the first input and output (no output: class values)."""
        for i, scaling in enumerate(model_input.value_scaling):
            if scaling.type == "processing":
                raise InvalidModelItemError(
                    f"{_INPUT}.value_scaling[{i}].type: 'processing' runs the package's own code, which "
                    "geomlops does not import; scale inside the model or declare an arithmetic scaling"
                )
        if len(model_input.value_scaling) not in (0, 1, len(model_input.bands) or 1):
            raise InvalidModelItemError(
                f"{_INPUT}.value_scaling: {len(model_input.value_scaling)} objects for "
                f"{len(model_input.bands)} bands; expected one for all bands or one per band"
            )
        size = _fixed_size(model_input)
        if model_input.resize_type is not None and model_input.resize_type not in RESIZE_TYPES:
            raise InvalidModelItemError(
                f"{_INPUT}.resize_type: {model_input.resize_type!r} is not applied by geomlops "
                f"(it applies {', '.join(RESIZE_TYPES)}, or null)"
            )
        chosen = halo if halo is not None else model_input.halo
        chosen = DEFAULT_HALO if chosen is None else chosen
        if chosen < 0:
            raise InvalidModelItemError(f"halo: expected pixels >= 0, got {chosen}")
        return cls(
            bands=model_input.bands,
            sources=model_input.source_bands,
            derived=tuple((d.name, parse(d.expression)) for d in model_input.derived),
            data_type=model_input.data_type,
            scaling=model_input.value_scaling,
            size=size,
            resize_type=model_input.resize_type,
            halo=chosen,
            **_reading(output),
        )

    @classmethod
    def from_output(cls, output: ModelOutput) -> ModelIO:
        """Only how the model's answers are read (no preparation, no halo): where the answer
        arrives without its input, as at an output transformer."""
        return cls(halo=0, **_reading(output))

    # -- before predict

    def band_indexes(self, src: Any) -> list[int]:
        """1-based bands of ``src`` to read, in the order of :attr:`sources`: by description where
        the imagery's band descriptions name every one, else as stored."""
        descriptions = list(getattr(src, "descriptions", ()) or ())
        if self.sources and all(b in descriptions for b in self.sources):
            return [descriptions.index(b) + 1 for b in self.sources]
        return list(range(1, src.count + 1))

    def prepare(
        self, data: np.ma.MaskedArray[Any, Any], *, own: bool = False
    ) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """Scaled model input ``(C, H, W)`` in the model's type, and where any band has no data.

        ``own``: ``data`` was read for this call alone, so its values may be changed in place
        (a block's worth of fresh memory costs more in page faults than the copy itself).
        """
        invalid: NDArray[np.bool_] = np.asarray(np.ma.getmaskarray(data).any(axis=0))
        values = np.ma.getdata(data)
        if self.derived:
            values, own = self._derive(values.astype(np.float32, copy=False), invalid), True
        if self.scaling:
            values, own = _scale(values.astype(np.float32, copy=False), self.scaling), True
        array = values.astype(self.data_type, copy=not own)
        array[:, invalid] = 0
        return array, invalid

    def _derive(self, sources: NDArray[np.float32], invalid: NDArray[np.bool_]) -> NDArray[np.float32]:
        """The model's bands from the sources read, derived ones computed; where a derived value
        is not finite (a ratio of zeros) the pixel is marked in ``invalid``: it has no data."""
        if sources.shape[0] != len(self.sources):
            raise ImageryMismatchError(
                f"{sources.shape[0]} band(s) given, but the model reads {len(self.sources)} "
                f"({', '.join(self.sources)}) to compute its derived bands"
            )
        by_name = dict(zip(self.sources, sources, strict=True))
        expressions = dict(self.derived)
        out = np.empty((len(self.bands), *sources.shape[1:]), np.float32)
        for i, band in enumerate(self.bands):
            if band in expressions:
                out[i] = expressions[band].evaluate(by_name)
                invalid |= ~np.isfinite(out[i])
            else:
                out[i] = by_name[band]
        return out

    def to_model_size(self, batch: NDArray[Any]) -> NDArray[Any]:
        """``(N, C, h, w)`` resized (or padded) to the model's fixed size, if it has one."""
        if self.size is None or batch.shape[-2:] == self.size:
            return batch
        height, width = batch.shape[-2:]
        if self.resize_type is None:
            raise ImageryMismatchError(
                f"the model takes {self.size[0]} x {self.size[1]} px ({_INPUT}.input.shape) and blocks with "
                f"their halo are {height} x {width} px, and {_INPUT}.resize_type is null: choose block_size "
                f"= {self.size[0]} - 2 x halo, or declare a resize_type"
            )
        if self.resize_type == "pad":
            if height > self.size[0] or width > self.size[1]:
                raise ImageryMismatchError(
                    f"blocks with their halo are {height} x {width} px, larger than the model's "
                    f"{self.size[0]} x {self.size[1]}: resize_type 'pad' cannot fit them; use a smaller "
                    "block_size"
                )
            pad = [(0, 0)] * (batch.ndim - 2) + [(0, self.size[0] - height), (0, self.size[1] - width)]
            return np.pad(batch, pad)
        return _resize(batch, self.size, linear=self.resize_type == "interpolation-linear")

    # -- after predict

    def interpret(self, raw: NDArray[Any], height: int, width: int) -> NDArray[np.uint8]:
        """The model's raw answer for a batch as ``(N, height, width)`` class values.

        Raises:
            GeomlopsError: the answer's shape does not fit the item's output, or class values
                that are not whole numbers in 0..254 (the message says what the item declares).
        """
        out = np.asarray(raw)
        if self.class_axis is not None:
            if out.ndim != 4 or self.class_axis >= out.ndim:
                raise GeomlopsError(
                    f"the model returned shape {out.shape}; {_OUTPUT}.result.dim_order declares a class "
                    f"dimension at axis {self.class_axis} of (batch, classes, height, width)"
                )
            out = np.moveaxis(out, self.class_axis, 1)
        elif out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        out = self._from_model_size(out, height, width)
        if out.ndim == 4:
            if out.shape[1] == 1:
                return self._threshold(out[:, 0])
            return self._argmax(out)
        if out.ndim != 3:
            raise GeomlopsError(
                f"the model returned shape {out.shape}; expected (batch, height, width) class values or "
                f"scores, or (batch, classes, height, width) scores as {_OUTPUT}.result declares"
            )
        if self.scores:
            return self._threshold(out)
        return _class_values(out)

    def _from_model_size(self, out: NDArray[Any], height: int, width: int) -> NDArray[Any]:
        if out.shape[-2:] == (height, width):
            return out
        if self.size is not None and out.shape[-2:] == self.size:
            if self.resize_type == "pad":
                return out[..., :height, :width]
            # scores are interpolated like the input; class values are taken from the nearest pixel
            linear = self.resize_type == "interpolation-linear" and out.dtype.kind == "f"
            return _resize(out, (height, width), linear=linear)
        raise GeomlopsError(
            f"the model returned {out.shape[-2]} x {out.shape[-1]} px for an input of {height} x {width} px; "
            "height and width of the answer must equal the input's"
        )

    def _argmax(self, scores: NDArray[Any]) -> NDArray[np.uint8]:
        n = scores.shape[1]
        values = self.class_values or tuple(range(n))
        if len(values) != n:
            raise GeomlopsError(
                f"the model returned {n} class channels, but {_OUTPUT}['classification:classes'] lists "
                f"{len(values)} classes ({', '.join(map(str, values))})"
            )
        lookup = np.asarray(values, dtype=np.uint8)
        result: NDArray[np.uint8] = lookup[np.argmax(scores, axis=1)]
        return result

    def _threshold(self, score: NDArray[Any]) -> NDArray[np.uint8]:
        values = self.class_values
        below, above = (values[0], values[1]) if len(values) >= 2 else (0, values[0] if values else 1)
        return np.where(score > self.threshold, np.uint8(above), np.uint8(below)).astype(np.uint8)


def _reading(output: ModelOutput | None) -> dict[str, Any]:
    """The fields of :class:`ModelIO` that read answers, from the MLM output (none: class values)."""
    if output is None:
        return {}
    dims = [d.lower() for d in output.dim_order]
    found = [i for i, d in enumerate(dims) if d in CLASS_DIMENSIONS]
    axis = found[0] if found else None
    try:
        kind = np.dtype(output.data_type).kind
    except TypeError as err:  # MLM allows "other" and complex types, which no class comes from
        raise InvalidModelItemError(
            f"{_OUTPUT}.result.data_type: {output.data_type!r} is not read by geomlops (it reads "
            "integer class values and float scores)"
        ) from err
    return {
        "class_axis": axis,
        "scores": axis is None and kind == "f",
        "class_values": tuple(c.value for c in output.classes),
        "threshold": output.threshold if output.threshold is not None else DEFAULT_THRESHOLD,
    }


def _class_values(out: NDArray[Any]) -> NDArray[np.uint8]:
    if out.dtype.kind == "f" and not np.array_equal(out, np.round(out)):
        raise GeomlopsError(
            f"the model returned fractional values ({out.dtype}) where {_OUTPUT}.result.data_type declares "
            "integer class values; declare a float data_type (one score, thresholded) or a class "
            "dimension (scores per class) in the item"
        )
    if out.dtype.kind not in "iubf":
        raise GeomlopsError(f"the model returned {out.dtype} values; expected class values")
    if out.size and (out.min() < 0 or out.max() >= NODATA_CLASS):
        raise GeomlopsError(
            f"the model returned class values {int(out.min())}..{int(out.max())}; class values must be "
            f"0..{NODATA_CLASS - 1} ({NODATA_CLASS} marks no data)"
        )
    return out.astype(np.uint8)


def _fixed_size(model_input: ModelInput) -> tuple[int, int] | None:
    sizes = dict(zip(model_input.dim_order, model_input.shape, strict=False))
    height, width = sizes.get("height", -1), sizes.get("width", -1)
    if height > 0 and width > 0:
        return (height, width)
    return None


def _scale(values: NDArray[np.float32], scalings: tuple[ValueScaling, ...]) -> NDArray[np.float32]:
    """MLM value scaling, per band when there is one object per band."""
    out = np.empty_like(values)
    for band in range(values.shape[0]):
        s = scalings[band] if len(scalings) > 1 else scalings[0]
        x = values[band]
        if s.type == "min-max":
            lo, hi = float(s.minimum or 0), float(s.maximum or 0)
            out[band] = (x - lo) / (hi - lo) if hi != lo else 0
        elif s.type == "z-score":
            out[band] = (x - float(s.mean or 0)) / float(s.stddev or 1)
        elif s.type == "clip":
            out[band] = np.clip(x, s.minimum, s.maximum)
        elif s.type == "clip-min":
            out[band] = np.maximum(x, float(s.minimum or 0))
        elif s.type == "clip-max":
            out[band] = np.minimum(x, float(s.maximum or 0))
        elif s.type == "offset":
            out[band] = x - float(s.value or 0)
        elif s.type == "scale":
            out[band] = x / float(s.value or 1)
        else:  # refused when the item is read
            raise InvalidModelItemError(f"{_INPUT}.value_scaling: type {s.type!r} is not applied by geomlops")
    return out


def _resize(batch: NDArray[Any], size: tuple[int, int], *, linear: bool) -> NDArray[Any]:
    """Resize the last two axes to ``size``: nearest pixel, or bilinear (pixel centres aligned)."""
    height, width = batch.shape[-2:]
    if not linear:
        rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
        cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
        return batch[..., rows[:, None], cols[None, :]]

    def axis_weights(
        n_in: int, n_out: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    r0, r1, wr = axis_weights(height, size[0])
    c0, c1, wc = axis_weights(width, size[1])
    data = batch.astype(np.float32, copy=False)
    rows = data[..., r0, :] * (1 - wr)[:, None] + data[..., r1, :] * wr[:, None]
    out = rows[..., c0] * (1 - wc) + rows[..., c1] * wc
    return out.astype(batch.dtype, copy=False)
