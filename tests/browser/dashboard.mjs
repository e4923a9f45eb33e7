// Loads the dashboard of a running service in headless Chromium at 1280 and
// 375 px wide, with credentials, and fails on any console error, any request
// to another origin, a chart without data, or a page wider than the screen.
// A third load with JavaScript off checks that the numbers are still there.
// Screenshots go to SCREENSHOT_DIR (default: screenshots/ at the repository root).
//
// Environment: KPI_BASE_URL, KPI_MASTER_KEY, KPI_DASHBOARD_PASSWORD, and
// CHROMIUM (default /usr/bin/chromium). The script seeds the data it shows.

import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const baseUrl = requireEnv("KPI_BASE_URL").replace(/\/$/, "");
const masterKey = requireEnv("KPI_MASTER_KEY");
const password = requireEnv("KPI_DASHBOARD_PASSWORD");
const screenshotDir = resolve(process.env.SCREENSHOT_DIR ?? join(here, "..", "..", "screenshots"));
const origin = new URL(baseUrl).origin;

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
}

async function send(method, path, body) {
  const response = await fetch(baseUrl + path, {
    method,
    headers: { "Content-Type": "application/json", "X-API-Key": masterKey },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    throw new Error(`${method} ${path}: HTTP ${response.status} ${await response.text()}`);
  }
}

/** Registers three centers and sends two weeks of batches plus some events. */
async function seed() {
  const centers = { HVC: "Hospital Veterinario Central", CVN: "Clínica Veterinaria del Norte", VSP: "Veterinaria San Pedro" };
  const today = new Date();
  for (const [code, name] of Object.entries(centers)) {
    await send("PUT", `/kpi/centers/${code}`, { name, city: "Santo Domingo", country: "RD" });
    for (let offset = 13; offset >= 0; offset--) {
      const date = new Date(today.getTime() - offset * 86_400_000).toISOString().slice(0, 10);
      const orders = 20 + ((offset * 7 + code.length * 5) % 17);
      await send("POST", "/kpi/submit", {
        center_code: code,
        date,
        total_orders: orders,
        total_results: orders - 2,
        total_pets: 10 + (offset % 5),
        total_owners: 8,
        tests: [
          { code: "GLU", name: "Glucosa", count: 5 + (offset % 4) },
          { code: "HCT", name: "Hematocrito", count: 3 },
          { code: "T4", name: "Tiroxina total", count: 1 + (offset % 3) },
        ],
        species: [
          { species: "Canino", count: 9 },
          { species: "Felino", count: 4 },
        ],
        breeds: [
          { breed: "Labrador", species: "Canino", count: 3 },
          { breed: "Siamés", species: "Felino", count: 2 },
        ],
      });
    }
  }
  const timestamp = today.toISOString();
  await send("POST", "/kpi/events", {
    center_code: "HVC",
    event_type: "order_created",
    timestamp,
    data: { tests: ["GLU"], species: "Canino", breed: "Poodle" },
  });
}

/** Loads the dashboard at one width and returns the problems found. */
async function check(browser, width, javaScriptEnabled) {
  const problems = [];
  const context = await browser.newContext({
    viewport: { width, height: 900 },
    httpCredentials: { username: "admin", password },
    javaScriptEnabled,
  });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.origin !== origin && url.protocol !== "data:") problems.push(`request to another origin: ${request.url()}`);
  });
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));

  const response = await page.goto(`${baseUrl}/?days=30`, { waitUntil: "networkidle" });
  if (response.status() !== 200) problems.push(`dashboard answered HTTP ${response.status()}`);

  const figures = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    cards: [...document.querySelectorAll(".card .value")].map((node) => node.textContent.trim()),
    panels: [...document.querySelectorAll("section.panel")].map((panel) => ({
      title: panel.querySelector("h2")?.textContent.trim(),
      bars: panel.querySelectorAll("svg.bar rect").length,
      polylines: panel.querySelectorAll("polyline").length,
    })),
    centersRows: document.querySelectorAll("section.panel table tbody tr").length,
    stylesApplied: getComputedStyle(document.body).fontFamily.includes("system-ui"),
  }));
  if (figures.scrollWidth > width) problems.push(`page is ${figures.scrollWidth} px wide at ${width} px`);
  if (figures.cards.length !== 5 || figures.cards[1] === "0") problems.push(`cards without data: ${figures.cards}`);
  for (const panel of figures.panels) {
    if (panel.bars === 0 && panel.polylines === 0 && panel.title !== "Centers") {
      problems.push(`chart "${panel.title}" has no data`);
    }
  }
  if (figures.centersRows < 3) problems.push(`centers table has ${figures.centersRows} rows`);
  if (!figures.stylesApplied) problems.push("stylesheet not applied");

  const suffix = javaScriptEnabled ? "" : "-no-js";
  const path = join(screenshotDir, `dashboard-${width}${suffix}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`dashboard at ${width} px${javaScriptEnabled ? "" : " without JavaScript"}: ${path}`);
  await context.close();
  return problems.map((problem) => `${width} px${suffix}: ${problem}`);
}

async function main() {
  mkdirSync(screenshotDir, { recursive: true });
  await seed();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const loads = [
    [1280, true],
    [375, true],
    [375, false],
  ];
  let failed = 0;
  try {
    for (const [width, javaScriptEnabled] of loads) {
      const problems = await check(browser, width, javaScriptEnabled);
      for (const problem of problems) console.error(`FAIL ${problem}`);
      if (problems.length > 0) failed += 1;
    }
  } finally {
    await browser.close();
  }
  console.log(`${loads.length - failed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
