"""A test-only Automatic1111 / Forge extension: records the batch size of every UNet call (a forward pre-hook on
the diffusion model) and serves them at GET /dice-test/calls, which also clears the record."""
from modules import script_callbacks, scripts, shared

CALLS: list[int] = []


def diffusion_model():
    model = shared.sd_model
    if hasattr(model, "forge_objects"):  # Forge, reForge
        return model.forge_objects.unet.model.diffusion_model
    return model.model.diffusion_model  # Automatic1111


def record(module, args, kwargs=None):
    CALLS.append(int(args[0].shape[0]))


class CallCounter(scripts.Script):
    def title(self):
        return "DICE test call counter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        unet = diffusion_model()
        if not getattr(unet, "_dice_test_counted", False):
            unet.register_forward_pre_hook(record)
            unet._dice_test_counted = True


def routes(demo, app):
    def calls():
        seen = list(CALLS)
        CALLS.clear()
        return {"batch_sizes": seen}

    app.add_api_route("/dice-test/calls", calls, methods=["GET"])


script_callbacks.on_app_started(routes)
