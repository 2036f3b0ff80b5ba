// The playground: the code box's cursor splits prompt and suffix; /v1/completions fills the gap.
"use strict";
const $ = (id) => document.getElementById(id);
let pending = null; // {cursor, text} of the last completion, until inserted

function show(before, text, after) {
  const pre = $("preview");
  pre.textContent = "";
  for (const [cls, part] of [["before", before.slice(-400)], ["new", text], ["after", after.slice(0, 200)]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = part;
    pre.appendChild(span);
  }
}

function status(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function complete() {
  const code = $("code");
  const cursor = code.selectionStart;
  const before = code.value.slice(0, cursor);
  const after = code.value.slice(cursor);
  const body = {
    model: $("model").textContent,
    prompt: before,
    max_tokens: Number($("max_tokens").value),
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    scope: $("scope").value,
  };
  if ($("fim").checked && after.trim()) body.suffix = after;
  const headers = { "Content-Type": "application/json" };
  if ($("api_key").value) headers["Authorization"] = "Bearer " + $("api_key").value;
  $("complete").disabled = true;
  status("completing…");
  const start = performance.now();
  try {
    const response = await fetch("/v1/completions", { method: "POST", headers, body: JSON.stringify(body) });
    const data = await response.json();
    const ms = Math.round(performance.now() - start);
    if (!response.ok) {
      status(`error ${response.status}: ${data.error ? data.error.message : response.statusText}`, true);
      return;
    }
    const choice = data.choices[0];
    pending = { cursor, text: choice.text };
    show(before, choice.text, after);
    $("accept").disabled = !choice.text;
    status(`${ms} ms · ${data.usage.completion_tokens} tokens · ${choice.finish_reason}` + (data.warning ? " · " + data.warning : ""));
  } catch (e) {
    status("request failed: " + e, true);
  } finally {
    $("complete").disabled = false;
  }
}

function accept() {
  if (!pending) return;
  const code = $("code");
  code.value = code.value.slice(0, pending.cursor) + pending.text + code.value.slice(pending.cursor);
  code.selectionStart = code.selectionEnd = pending.cursor + pending.text.length;
  code.focus();
  pending = null;
  $("accept").disabled = true;
}

$("complete").addEventListener("click", complete);
$("accept").addEventListener("click", accept);
$("code").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); complete(); }
  if (e.key === "Tab" && pending) { e.preventDefault(); accept(); }
});
