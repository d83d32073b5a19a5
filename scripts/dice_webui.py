"""DICE for Automatic1111 and Forge: the accordion, the host's hooks, nothing else (the glue is webui/glue.py, the
formulas are the sharpener core's). Automatic1111 loads every scripts/*.py of an extension; ComfyUI never reads it.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import gradio as gr
import torch

from modules import devices, paths, prompt_parser, script_callbacks, scripts, shared
from modules.ui_common import create_refresh_button
from modules.ui_components import InputAccordion

# The pack under a name of its own: a top-level "sharpeners" or "webui" could be another extension's.
PACKAGE = "sd_webui_dice"
ROOT = Path(__file__).resolve().parents[1]
if PACKAGE not in sys.modules:
    _spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules[PACKAGE] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[PACKAGE])
glue = importlib.import_module(f"{PACKAGE}.webui.glue")
errors = importlib.import_module(f"{PACKAGE}.sharpeners.errors")

log = logging.getLogger("dice")
# Forge and reForge drop the negative pass at CFG 1 themselves; Automatic1111 needs its setting.
SKIPS_NEGATIVE_ITSELF = importlib.util.find_spec("modules_forge") is not None


def folder() -> Path:
    found = glue.sharpener_folder(paths.models_path, getattr(shared.cmd_opts, "dice_sharpeners_dir", None))
    found.mkdir(parents=True, exist_ok=True)
    return found


def lora_folder() -> Path:
    """The built-in Lora extension's folder (--lora-dir, default models/Lora), where guidance adapters go."""
    return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(paths.models_path) / "Lora")


def current_unet() -> torch.nn.Module:
    """The checkpoint's diffusion model, as the host runs it."""
    forge = getattr(shared.sd_model, "forge_objects", None)
    return forge.unet.model.diffusion_model if forge is not None else shared.sd_model.model.diffusion_model


def checkpoint_sha256() -> str | None:
    """The loaded checkpoint's sha256, which both webuis compute when they load it."""
    return getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "sha256", None)


def unet_layer_paths() -> list[str]:
    """Module paths of the checkpoint's diffusion model, as the adapter's layer names spell them."""
    return [name for name, _ in current_unet().named_modules()]


# The negative-prompt hooks of the generation in progress; the next generation first removes any that a failed one left.
_negative_attention: list = []


def attach_negative_attention(p, negative: str, settings) -> None:
    """The negative prompt through NAG on every cross-attention of the UNet, for this generation's one call a step."""
    detach_negative_attention()
    attention = glue.NegativeAttention(encode(p, negative), settings)
    if attention.attach(current_unet()) == 0:
        refuse(p, "DICE: this checkpoint's UNet has no cross-attention (attn2) the negative prompt could act on")
        return
    _negative_attention.append(attention)


def detach_negative_attention() -> None:
    while _negative_attention:
        _negative_attention.pop().detach()


def prompts_of(p) -> list[str]:
    prompts = [p.prompt] if isinstance(p.prompt, str) else list(p.prompt)
    return prompts + ([p.hr_prompt] if isinstance(getattr(p, "hr_prompt", None), str) else [])


def choices() -> list[str]:
    return [glue.NONE, *glue.list_sharpeners(folder())]


def encode(p, text: str) -> torch.Tensor:
    """text as a positive prompt (SDXL's host turns an empty negative into zeros; sharpeners learnt the real one)."""
    with torch.no_grad(), devices.autocast():
        schedules = prompt_parser.get_learned_conditioning(shared.sd_model, [text], p.steps)
    return glue.first_cond(schedules[0][0].cond)


def refuse(p, message: str) -> None:
    """Stop this generation with the reason in the UI's info box and the API's info; the host keeps running."""
    log.error(message)
    p.comment(message)
    p.extra_generation_params["DICE error"] = message
    shared.state.interrupt()


class DiceScript(scripts.Script):
    def title(self):
        return glue.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        with InputAccordion(False, label="DICE: CFG quality at CFG scale 1", elem_id=f"{tab}_dice") as enabled:
            with gr.Row():
                sharpener = gr.Dropdown(label="Sharpener", choices=choices(), value=glue.NONE,
                                        elem_id=f"{tab}_dice_sharpener",
                                        info="A .safetensors file in models/sharpeners made for this checkpoint "
                                             "by training/train.py")
                create_refresh_button(sharpener, lambda: None, lambda: {"choices": choices()}, f"{tab}_dice_refresh")
            alpha = gr.Slider(label="Sharpening α", minimum=0.0, maximum=2.0, step=0.05, value=1.0,
                              elem_id=f"{tab}_dice_alpha",
                              info="Acts like the CFG scale: 0 = plain CFG-1 sampling, 1 = the scale it was trained "
                                   "for; 0.5-0.75 often looks best")
            beta = gr.Slider(label="Negative shift β", minimum=0.0, maximum=2.0, step=0.05, value=0.5,
                             elem_id=f"{tab}_dice_beta",
                             info="How far to move away from the negative prompt (used only when there is one)")
            guidance = gr.Slider(label="Adapter guidance (CFG scale)", minimum=1.0, maximum=15.0, step=0.5,
                                 value=glue.DEFAULT_GUIDANCE, elem_id=f"{tab}_dice_guidance",
                                 info="For DICE guidance adapters in the prompt (<lora:…>): the image CFG would give at "
                                      "this scale, in one UNet call per step; 1 = the plain model")
            negative_strength = gr.Slider(label="Adapter negative prompt strength", minimum=1.0, maximum=10.0,
                                          step=0.1, value=glue.NAG_DEFAULTS.scale, elem_id=f"{tab}_dice_negative",
                                          info="With an adapter, the negative prompt acts inside the one call per "
                                               "step (NAG's scale): 1 = ignored, higher = kept further away")
            gr.Markdown("Set **CFG scale to 1**: each step then costs one UNet call; the adapter guidance slider "
                        "above is the guidance. The negative prompt box still works: with an adapter through its "
                        "cross-attention, with a sharpener through the sharpener and the shift.")
        self.infotext_fields = [
            (enabled, lambda params: glue.from_infotext(params, "enabled", False)),
            (sharpener, lambda params: glue.from_infotext(params, glue.KEY_SHARPENER, gr.update())),
            (alpha, lambda params: glue.from_infotext(params, glue.KEY_ALPHA, gr.update())),
            (beta, lambda params: glue.from_infotext(params, glue.KEY_BETA, gr.update())),
            (guidance, lambda params: glue.from_infotext(params, glue.KEY_GUIDANCE, gr.update())),
            (negative_strength, lambda params: glue.from_infotext(params, glue.KEY_NAG, gr.update())),
        ]
        self.paste_field_names = [glue.KEY_SHARPENER, glue.KEY_ALPHA, glue.KEY_BETA, glue.KEY_GUIDANCE, glue.KEY_NAG]
        # New controls go last: API callers pass them by position.
        return [enabled, sharpener, alpha, beta, guidance, negative_strength]

    def before_process(self, p, enabled, name, alpha, beta, guidance=glue.DEFAULT_GUIDANCE, *_):
        p.dice_adapters, p.dice_adapter_error = [], None
        if not enabled:
            return
        try:
            # Guidance adapters come through the built-in Lora (<lora:name:1>); checked here, before the host loads them.
            p.dice_adapters = glue.dice_adapters(lora_folder(), prompts_of(p), unet_layer_paths)
            factors, p.dice_adapter_warnings = glue.adapter_factors(p.dice_adapters, float(guidance))
        except errors.DiceError as error:
            p.dice_adapter_error = str(error)
            return
        if p.dice_adapters:
            scale_adapters_when_parsed(p, factors)
        if (name != glue.NONE or p.dice_adapters) and p.cfg_scale == 1 and not SKIPS_NEGATIVE_ITSELF:
            glue.skip_negative_pass(shared.opts.data, shared.opts.get_default(glue.SKIP_NEGATIVE_SETTING),
                                    p.override_settings)

    def process(self, p, enabled, name, alpha, beta, guidance=glue.DEFAULT_GUIDANCE,
                negative_strength=glue.NAG_DEFAULTS.scale, *_):
        p.dice = None
        detach_negative_attention()
        if not enabled:
            return
        if getattr(p, "dice_adapter_error", None):
            refuse(p, p.dice_adapter_error)
            return
        adapters = getattr(p, "dice_adapters", [])
        if name == glue.NONE and not adapters:
            return
        warning = glue.guidance_warning(p.cfg_scale)
        if warning:
            log.warning(warning)
            p.comment(warning)
        if adapters:
            p.extra_generation_params[glue.KEY_ADAPTER] = ", ".join(Path(a.path).stem for a in adapters)
            p.extra_generation_params[glue.KEY_GUIDANCE] = f"{float(guidance):g}"
            warnings = getattr(p, "dice_adapter_warnings", [])
            for warning in warnings:
                log.warning(warning)
                p.comment(warning)
            if warnings:
                p.extra_generation_params[glue.KEY_WARNING] = "; ".join(warnings)
            notes, bases = glue.other_checkpoint_notes(adapters, checkpoint_sha256())
            for note in notes:
                log.info(note)
                p.comment(note)
            if bases:
                p.extra_generation_params[glue.KEY_BASE] = bases
        negative = p.negative_prompt if isinstance(p.negative_prompt, str) else (p.negative_prompt or [""])[0]
        if adapters and negative.strip():
            try:
                settings = glue.negative_settings(adapters, float(negative_strength))
            except errors.DiceError as error:
                refuse(p, str(error))
                return
            if not settings.off:
                attach_negative_attention(p, negative, settings)
            p.extra_generation_params[glue.KEY_NAG] = f"{settings.scale:g}"
        if name == glue.NONE:
            return
        try:
            generation = glue.Generation(glue.load(folder(), name), float(alpha), float(beta), negative)
            generation.encoded = {text: encode(p, text) for text in generation.prompts_to_encode()}
            generation.check_width()
        except errors.DiceError as error:
            refuse(p, str(error))
            return
        p.dice = generation
        p.extra_generation_params.update(glue.infotext(name, float(alpha), float(beta), negative))

    def postprocess(self, p, processed, *args):
        detach_negative_attention()

    def postprocess_batch(self, p, *args, **kwargs):
        # The dropped negative pass is this extension's doing: pasting it back would drop it for CFG > 1 too.
        if getattr(p, "dice", None) is not None or getattr(p, "dice_adapters", None):
            p.extra_generation_params.pop(glue.SKIP_NEGATIVE_INFOTEXT, None)


def scale_adapters_when_parsed(p, factors: dict[str, float]) -> None:
    """After the host parses each batch's <lora:…> (and the hires pass's), the adapters' multipliers take the knob's
    factor; the prompt text, and so the image's parameters, stay as the user wrote them."""
    parse = p.parse_extra_network_prompts

    def parse_then_scale():
        result = parse()
        for data in (p.extra_network_data, getattr(p, "hr_extra_network_data", None)):
            glue.scale_adapter_networks((data or {}).get("lora", []), factors)
        return result

    p.parse_extra_network_prompts = parse_then_scale


def sharpen_step(params) -> None:
    """Each step's conditioning, after the host picked it (prompt editing, AND, hires fix) and before the UNet."""
    p = getattr(params.denoiser, "p", None)
    generation = getattr(p, "dice", None)
    if generation is None:
        return
    try:
        params.text_cond = generation.apply(params.text_cond)
    except errors.DiceError as error:
        p.dice = None
        refuse(p, str(error))


def add_api(demo, app) -> None:
    """GET /dice/v1/sharpeners: the folder and the files the dropdown offers, for API users."""
    app.add_api_route("/dice/v1/sharpeners", lambda: {"folder": str(folder()), "sharpeners": glue.list_sharpeners(folder())},
                      methods=["GET"])


script_callbacks.on_cfg_denoiser(sharpen_step)
script_callbacks.on_app_started(add_api)
