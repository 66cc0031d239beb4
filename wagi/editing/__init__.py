"""Latent editing for WaGI: InterFaceGAN boundaries, SeFa, GANSpace, StyleCLIP global directions and mappers.

Every method yields a W+ shift ``d`` and an edit ``w+ ← w+ + s · d``; :meth:`wagi.models.wagi.WaGI.edit`
renders it, re-applying the wavelet fusion through the aligner for image inputs. All directions are
computed for (or fitted on) the generator being edited: directions published for StyleGAN2-FFHQ do not
transfer to a separately trained SWAGAN (see ``docs/reference-notes`` §8.4).

Modules: :mod:`.directions` (shapes, layer ranges), :mod:`.interfacegan` (load / fit / project
boundaries), :mod:`.factorization` (SeFa, GANSpace), :mod:`.styleclip` (text directions in W+,
LevelsMapper), :mod:`.latents` (saved codes, labels), :mod:`.specs` (``KIND:SPEC`` strings → edits).
"""
from .directions import as_direction, check_layer_range, parse_layer_range, restrict_layers, shift_latents
from .factorization import (
                            GanspaceEdit,
                            fix_signs,
                            ganspace_direction,
                            ganspace_directions,
                            latent_index_of,
                            modulation_weights,
                            sefa_directions,
)
from .interfacegan import BoundaryError, fit_boundary, load_boundary, project_boundary, save_boundary
from .latents import LatentFileError, attribute_value, labels_array, load_latents, name_key, read_labels
from .specs import DIRECTION_KINDS, EditOptions, LatentEdit, build_edit, parse_direction, render_edits
from .styleclip import (
                            CLIPEncoder,
                            CLIPUnavailableError,
                            GlobalDirectionStats,
                            LatentMapper,
                            LevelsMapper,
                            TextImageEncoder,
                            compute_global_stats,
                            global_direction,
                            load_clip,
                            load_mapper,
                            styleclip_global_stats,
                            text_direction,
)

__all__ = [
    "as_direction", "check_layer_range", "parse_layer_range", "restrict_layers", "shift_latents",
    "GanspaceEdit", "fix_signs", "ganspace_direction", "ganspace_directions", "latent_index_of",
    "modulation_weights", "sefa_directions",
    "BoundaryError", "fit_boundary", "load_boundary", "project_boundary", "save_boundary",
    "LatentFileError", "attribute_value", "labels_array", "load_latents", "name_key", "read_labels",
    "DIRECTION_KINDS", "EditOptions", "LatentEdit", "build_edit", "parse_direction", "render_edits",
    "CLIPEncoder", "CLIPUnavailableError", "GlobalDirectionStats", "LatentMapper", "LevelsMapper",
    "TextImageEncoder", "compute_global_stats", "global_direction", "load_clip", "load_mapper",
    "styleclip_global_stats", "text_direction",
]
