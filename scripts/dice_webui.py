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


def unet_layer_paths() -> list[str]:
    """Module paths of the checkpoint's diffusion model, as the adapter's layer names spell them."""
    forge = getattr(shared.sd_model, "forge_objects", None)
    unet = forge.unet.model.diffusion_model if forge is not None else shared.sd_model.model.diffusion_model
    return [name for name, _ in unet.named_modules()]


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
            gr.Markdown("Set **CFG scale to 1**: each step then costs one UNet call. The negative prompt box "
                        "still works, through the sharpener and the shift.")
        self.infotext_fields = [
            (enabled, lambda params: glue.from_infotext(params, "enabled", False)),
            (sharpener, lambda params: glue.from_infotext(params, glue.KEY_SHARPENER, gr.update())),
            (alpha, lambda params: glue.from_infotext(params, glue.KEY_ALPHA, gr.update())),
            (beta, lambda params: glue.from_infotext(params, glue.KEY_BETA, gr.update())),
        ]
        self.paste_field_names = [glue.KEY_SHARPENER, glue.KEY_ALPHA, glue.KEY_BETA]
        return [enabled, sharpener, alpha, beta]

    def before_process(self, p, enabled, name, alpha, beta):
        p.dice_adapters, p.dice_adapter_error = [], None
        if not enabled:
            return
        try:
            # Guidance adapters come through the built-in Lora (<lora:name:1>); checked here, before the host loads them.
            p.dice_adapters = glue.dice_adapters(lora_folder(), prompts_of(p), unet_layer_paths)
        except errors.DiceError as error:
            p.dice_adapter_error = str(error)
        if (name != glue.NONE or p.dice_adapters) and p.cfg_scale == 1 and not SKIPS_NEGATIVE_ITSELF:
            glue.skip_negative_pass(shared.opts.data, shared.opts.get_default(glue.SKIP_NEGATIVE_SETTING),
                                    p.override_settings)

    def process(self, p, enabled, name, alpha, beta):
        p.dice = None
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
        if name == glue.NONE:
            return
        negative = p.negative_prompt if isinstance(p.negative_prompt, str) else (p.negative_prompt or [""])[0]
        try:
            generation = glue.Generation(glue.load(folder(), name), float(alpha), float(beta), negative)
            generation.encoded = {text: encode(p, text) for text in generation.prompts_to_encode()}
            generation.check_width()
        except errors.DiceError as error:
            refuse(p, str(error))
            return
        p.dice = generation
        p.extra_generation_params.update(glue.infotext(name, float(alpha), float(beta), negative))

    def postprocess_batch(self, p, *args, **kwargs):
        # The dropped negative pass is this extension's doing: pasting it back would drop it for CFG > 1 too.
        if getattr(p, "dice", None) is not None:
            p.extra_generation_params.pop(glue.SKIP_NEGATIVE_INFOTEXT, None)


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
