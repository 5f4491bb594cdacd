// poolguard's dashboard in a real headless Chromium (Debian's /usr/bin/chromium through
// playwright-core, which downloads no browser of its own), driven one command at a time.
//
// Usage: node dashboard.js URL [CHROMIUM]
// Prints one JSON object per line on stdout; reads commands from stdin, one per line:
//   (start)            loads URL, waits for the first pool card: {"event":"loaded","text":...}
//   wait-text TEXT     waits (no reload) until the page's text contains TEXT:
//                      {"event":"found","text":...,"same_document":true|false}
//   screenshot PATH    full-page PNG at PATH, decoded again by the browser to check it:
//                      {"event":"screenshot","path":...,"width":...,"height":...,"colors":...}
//   quit
// Any failure prints {"event":"error","message":...} and exits 1. Every wait is bounded.
'use strict';
const fs = require('fs');
const readline = require('readline');
const { chromium } = require('playwright-core');

const [url, executablePath = '/usr/bin/chromium'] = process.argv.slice(2);
const WAIT_MS = 60000;

function say(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function pageText(page) {
  return page.evaluate(() => document.body.innerText);
}

// Decodes the PNG in the browser and counts distinct colours on a grid of samples: a blank or
// uniform capture has one or two.
async function inspectPng(browser, png) {
  const page = await browser.newPage();
  try {
    return await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = 'data:image/png;base64,' + b64;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const data = g.getImageData(0, 0, c.width, c.height).data;
      const colors = new Set();
      const step = Math.max(1, Math.floor(Math.sqrt((c.width * c.height) / 40000)));
      for (let y = 0; y < c.height; y += step) {
        for (let x = 0; x < c.width; x += step) {
          const i = (y * c.width + x) * 4;
          colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
      }
      return { width: c.width, height: c.height, colors: colors.size };
    }, png.toString('base64'));
  } finally {
    await page.close();
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(url, { timeout: WAIT_MS });
    await page.waitForSelector('.pool', { timeout: WAIT_MS });
    // A marker that a reload would lose: "live" means this same document saw the change.
    await page.evaluate(() => { window.__poolguardMarker = 'first-load'; });
    say({ event: 'loaded', text: await pageText(page) });
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      const [cmd, ...rest] = line.trim().split(' ');
      const arg = rest.join(' ');
      if (cmd === 'quit' || cmd === '') break;
      if (cmd === 'wait-text') {
        await page.waitForFunction((t) => document.body.innerText.includes(t), arg, {
          timeout: WAIT_MS,
          polling: 250,
        });
        const same = await page.evaluate(() => window.__poolguardMarker === 'first-load');
        say({ event: 'found', text: await pageText(page), same_document: same });
      } else if (cmd === 'screenshot') {
        const png = await page.screenshot({ fullPage: true });
        fs.writeFileSync(arg, png);
        say({ event: 'screenshot', path: arg, ...(await inspectPng(browser, png)) });
      } else {
        throw new Error(`unknown command ${cmd}`);
      }
    }
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => {
  say({ event: 'error', message: String(e && e.stack || e) });
  process.exit(1);
});
