"""``showroom generate``: novel views of a saved reconstruction, written as a frame folder of PNGs.

``showroom_ros.apps.cli`` forwards ``showroom generate ...`` to :func:`main`. The reconstruction is the
``.npz`` that ``showroom reconstruct`` wrote (or its folder); the keyframe photos are taken from
``--frames`` or from the ``<name>_keyframes`` folder ``showroom reconstruct`` writes beside it, and
the views go to ``--output-dir`` or ``<name>_generated`` beside it, where ``showroom view`` finds them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from showroom_ros.generation.generate import (
    DEFAULT_YAW_DEG,
    GenerationRequest,
    generate_views,
    save_generated_views,
    validate_request,
)
from showroom_ros.generation.inpainting import (
    BACKENDS,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    SCHEDULERS,
    load_inpainter,
)
from showroom_ros.generation.view_synthesis import RENDER_SOURCES
from showroom_ros.io.console import FractionProgress, result, say, stdout_for_results
from showroom_ros.io.file_names import GENERATED_SUFFIX, KEYFRAMES_SUFFIX


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``showroom generate``."""
    parser.add_argument(
        "reconstruction", help="reconstruction .npz (or the folder showroom reconstruct wrote)"
    )
    parser.add_argument(
        "-o", "--output-dir", help="where to write the views (default: <name>_generated beside the .npz)"
    )
    parser.add_argument(
        "--frames",
        help="frame folder with the keyframe photos in reconstruction order "
        "(default: <name>_keyframes beside the .npz when present; without "
        "photos, views are rendered from geometry only)",
    )
    parser.add_argument(
        "--keyframe", type=int, default=-1, help="keyframe to turn; -1 lets the discriminator choose"
    )
    parser.add_argument(
        "--yaw",
        type=float,
        action="append",
        default=[],
        help="turn angle in degrees, positive = left (repeatable)",
    )
    parser.add_argument("--views", type=int, default=1, help="number of views when no --yaw is given")
    parser.add_argument(
        "--max-yaw", type=float, default=DEFAULT_YAW_DEG, help="largest turn for --views (deg)"
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT)
    parser.add_argument("--steps", type=int, default=30, help="diffusion steps")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0, help="-1 for a random seed; view i uses seed + i")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inpainting: auto = diffusers when --model is given, else opencv",
    )
    parser.add_argument(
        "--model",
        help="inpainting model: hub id (from the local cache offline) or a "
        "diffusers directory, e.g. stabilityai/stable-diffusion-2-inpainting",
    )
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="default")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--st-roomnet", help="ST-RoomNet Keras weights (.h5) for the layout discriminator")
    parser.add_argument(
        "--render-source",
        choices=RENDER_SOURCES,
        default="auto",
        help="geometry to render: the mesh when there is one (auto), or the cloud",
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or notes; errors only")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="showroom generate",
        description="Turn keyframe cameras of a saved reconstruction, render what is known, "
        "inpaint the rest.",
    )
    return add_generate_arguments(parser)


def find_npz(path: str | Path) -> Path:
    """The reconstruction file: the .npz itself or the single .npz in a folder."""
    location = Path(path).expanduser()
    if location.is_dir():
        candidates = sorted(location.glob("*.npz"))
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise ValueError(f"{location} must hold exactly one reconstruction .npz (found {found})")
        return candidates[0]
    if not location.is_file():
        raise ValueError(f"reconstruction {location} does not exist (run `showroom reconstruct` first)")
    return location


def _keyframe_images(frames: str | None, npz: Path, cameras: int) -> tuple[list[np.ndarray] | None, str]:
    from showroom_ros.io.datasets import load_frame_folder

    folder = Path(frames).expanduser() if frames else npz.with_name(npz.stem + KEYFRAMES_SUFFIX)
    if not folder.is_dir():
        if frames:
            raise ValueError(f"--frames {folder} is not a folder")
        return None, "no keyframe photos (rendering from geometry only)"
    images = [k.image for k in load_frame_folder(folder, with_depth=False, with_poses=False)]
    if len(images) != cameras:
        if frames:
            raise ValueError(
                f"{folder} has {len(images)} frames but the reconstruction has {cameras} cameras"
            )
        return None, f"{folder} does not match the reconstruction's {cameras} cameras; not using its photos"
    return images, f"keyframe photos from {folder}"


def run_generate_cli(args: argparse.Namespace) -> int:
    """``showroom generate`` with parsed arguments; returns the exit status (2 on a bad input).

    The result (what was written) is the only thing on stdout; notes and progress go to stderr.
    """
    from showroom_ros.io.export import load_reconstruction

    try:
        npz = find_npz(args.reconstruction)
        reconstruction = load_reconstruction(npz)
        cameras = len(reconstruction.camera_poses)
        images, source = _keyframe_images(args.frames, npz, cameras)
        request = GenerationRequest(
            keyframe_index=args.keyframe,
            yaw_angles_deg=tuple(args.yaw),
            num_views=args.views,
            max_yaw_deg=args.max_yaw,
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            guidance_scale=args.guidance,
            seed=args.seed,
            backend=args.backend,
        )
        validate_request(request, reconstruction, cameras)
        say(source, args.quiet)
        discriminator = None
        if args.st_roomnet:
            from showroom_ros.generation.st_roomnet import RoomLayoutEstimator

            discriminator = RoomLayoutEstimator.from_h5(args.st_roomnet, args.device or "cpu")
        kwargs = {"scheduler": args.scheduler} if args.scheduler != "default" else {}
        inpainter, status = load_inpainter(args.backend, args.model, args.device, **kwargs)
        say(status, args.quiet)
        with FractionProgress("generating", args.quiet) as report:
            views = generate_views(
                reconstruction, images, request, inpainter, discriminator, report, render_source=args.render_source
            )
        output = (
            Path(args.output_dir).expanduser()
            if args.output_dir
            else npz.with_name(npz.stem + GENERATED_SUFFIX)
        )
        written = save_generated_views(views, output, status, reconstruction.frame_id, reconstruction.metric)
    except (ValueError, OSError) as error:
        say(f"showroom generate: error: {error}")
        return 2
    accepted = sum(v.accepted for v in views)
    if args.json:
        document = {
            "output": str(output),
            "inpainter": status,
            "views": [
                {
                    "source_keyframe": v.source_keyframe,
                    "yaw_deg": v.yaw_deg,
                    "accepted": v.accepted,
                    "reason": v.reason,
                }
                for v in views
            ],
            "files": [str(path) for path in written],
        }
        result(json.dumps(document, indent=2))
    elif not args.quiet:
        result(f"wrote {len(written)} files to {output}; {accepted} of {len(views)} view(s) accepted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # outside: the result of --help is the help, on stdout
    with stdout_for_results():
        return run_generate_cli(args)


if __name__ == "__main__":
    raise SystemExit(main())
