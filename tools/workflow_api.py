"""Turn a workflow saved from ComfyUI's UI into the API format that POST /prompt takes.

Widget values are matched to input names through /object_info, as the frontend does; nodes that the
server does not know (Note, MarkdownNote) and muted or bypassed nodes are left out.
"""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SKIPPED_MODES = {2, 4}  # muted, bypassed


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt for a UI workflow; raises KeyError naming a link the workflow lacks."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind not in object_info or node.get("mode", 0) in SKIPPED_MODES:
            continue
        info = object_info[kind]
        linked = {entry["name"]: entry["link"] for entry in node.get("inputs", []) if entry.get("link") is not None}
        widgets = iter(node.get("widgets_values") or [])
        inputs = {}
        for section in ("required", "optional"):
            for name in info.get("input_order", {}).get(section, []):
                spec = info["input"][section][name]
                if _is_widget(spec):
                    value = next(widgets, None)
                    if len(spec) > 1 and spec[1].get("control_after_generate"):
                        next(widgets, None)  # the UI stores 'fixed'/'randomize' right after the seed
                    if name not in linked and value is not None:
                        inputs[name] = value
                if name in linked:
                    link = links[linked[name]]
                    inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt
