// A small driver for Firefox over WebDriver BiDi (puppeteer-core), for Go
// tests: it reads one JSON command a line on stdin and answers each with
// one JSON line on stdout, {"ok":true,"value":…} or {"ok":false,"error":…}.
//
//   {"op":"launch","executable":"/usr/bin/firefox-esr","prefs":{…}}  → the browser's version
//   {"op":"page"}                      → a page id, in a fresh browser context (its own cookie jar)
//   {"op":"goto","page":1,"url":"…"}   → loads url, waits for its load event
//   {"op":"eval","page":1,"expr":"…"}  → the expression's value (awaited when a promise)
//   {"op":"wait","page":1,"expr":"…","timeout":15000}
//                                      → the expression's first truthy value, evaluated again
//                                        across navigations until the timeout (ms)
//   {"op":"cookies","page":1,"urls":["…"]} → the context's cookies for those URLs
//   {"op":"closePage","page":1}, {"op":"close"}
import readline from "node:readline";
import puppeteer from "puppeteer-core";

let browser;
const pages = new Map();
let nextID = 1;

async function handle(cmd) {
  switch (cmd.op) {
    case "launch":
      browser = await puppeteer.launch({
        browser: "firefox",
        executablePath: cmd.executable,
        headless: true,
        acceptInsecureCerts: true, // the tests' own CA
        extraPrefsFirefox: cmd.prefs || {},
      });
      return browser.version();
    case "page": {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      const id = nextID++;
      pages.set(id, { context, page });
      return id;
    }
    case "goto":
      await pages.get(cmd.page).page.goto(cmd.url, { waitUntil: "load" });
      return null;
    case "eval":
      return await pages.get(cmd.page).page.evaluate(cmd.expr);
    case "wait": {
      const { page } = pages.get(cmd.page);
      const deadline = Date.now() + (cmd.timeout || 15000);
      let last;
      for (;;) {
        try {
          const v = await page.evaluate(cmd.expr);
          if (v) return v;
          last = v;
        } catch (e) {
          last = String(e); // a navigation replaced the document: try again
        }
        if (Date.now() > deadline) throw new Error("timed out waiting for " + cmd.expr + "; last: " + JSON.stringify(last));
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    case "cookies":
      return (await pages.get(cmd.page).page.cookies(...cmd.urls)).map((c) => ({
        name: c.name, value: c.value, partitionKey: c.partitionKey ? JSON.stringify(c.partitionKey) : "",
      }));
    case "closePage": {
      const p = pages.get(cmd.page);
      pages.delete(cmd.page);
      await p.context.close();
      return null;
    }
    case "close":
      if (browser) await browser.close();
      browser = undefined;
      return null;
    default:
      throw new Error("unknown op " + cmd.op);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    answer = { ok: true, value: await handle(JSON.parse(line)) };
  } catch (e) {
    answer = { ok: false, error: String((e && e.stack) || e) };
  }
  process.stdout.write(JSON.stringify(answer === undefined ? null : answer) + "\n");
}
if (browser) await browser.close();
