// node webui_screenshot.mjs <Automatic1111 url> <out.png> <sharpener name> [chromium path]
// Opens the txt2img tab, opens the DICE accordion, picks the sharpener, sets CFG scale to 1, and saves a picture.
import { chromium } from "playwright-core";

const [url, out, sharpener, executable = "/usr/bin/chromium"] = process.argv.slice(2);
if (!url || !out || !sharpener) {
  console.error("usage: node webui_screenshot.mjs <url> <out.png> <sharpener name> [chromium path]");
  process.exit(2);
}
const browser = await chromium.launch({ executablePath: executable, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  await page.goto(url, { waitUntil: "networkidle", timeout: 180000 });
  const accordion = page.locator("#txt2img_dice");
  await accordion.waitFor({ timeout: 120000 });
  await accordion.locator(".label-wrap").first().click(); // opening the accordion ticks its checkbox: DICE on
  await page.locator("#txt2img_prompt textarea").fill("a red fox in the snow, golden hour, detailed fur");
  await page.locator("#txt2img_neg_prompt textarea").fill("blurry, watermark");
  const cfg = page.locator("#txt2img_cfg_scale input[type=number]");
  await cfg.fill("1");
  await cfg.press("Enter");
  const dropdown = page.locator("#txt2img_dice_sharpener input");
  await dropdown.click();
  await page.locator("#txt2img_dice_sharpener ul.options li", { hasText: sharpener }).first().click();
  await page.locator("#txt2img_dice_alpha").click({ position: { x: 5, y: 5 } }); // closes the option list
  await page.waitForTimeout(1000);
  await accordion.scrollIntoViewIfNeeded();
  await page.screenshot({ path: out, fullPage: false });
  console.log(out);
} finally {
  await browser.close();
}
