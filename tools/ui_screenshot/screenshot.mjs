// node screenshot.mjs <ComfyUI url> <workflow.json> <out.png> [chromium path]
// Opens the ComfyUI page, loads the workflow into the canvas as the user's drag-and-drop would, and saves a picture.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, workflowPath, out, executable = "/usr/bin/chromium"] = process.argv.slice(2);
if (!url || !workflowPath || !out) {
  console.error("usage: node screenshot.mjs <ComfyUI url> <workflow.json> <out.png> [chromium path]");
  process.exit(2);
}
const workflow = JSON.parse(readFileSync(workflowPath, "utf8"));
const browser = await chromium.launch({ executablePath: executable, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  await page.goto(url, { waitUntil: "networkidle" });
  await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 120000 });
  await page.keyboard.press("Escape"); // closes any dialog a first visit opens
  await page.evaluate(async (graph) => {
    await window.app.loadGraphData(graph);
    // Frame every node, so the picture shows the whole workflow whatever the window size.
    window.app.canvas.ds.scale = 0.75;
    const nodes = window.app.graph._nodes;
    const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1]));
    window.app.canvas.ds.offset = [40 - left, 60 - top];
    window.app.canvas.setDirty(true, true);
  }, workflow);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out });
  console.log(out);
} finally {
  await browser.close();
}
