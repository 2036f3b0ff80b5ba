// llama.cpp on a GGUF file, for PYCPilot's tests and benchmarks: `node llama.mjs JOB.json` prints one JSON object.
// JOB: {"model": "m.gguf", "threads": 2, "context": 256,
//       "tokenize": ["text", ...],                       -> "tokens": [[id, ...], ...] (special tokens parsed)
//       "greedy": [{"prompt": "...", "n": 16}, ...],      -> "greedy": [{"tokens": [...], "text": "..."}, ...]
//       "infill": [{"prefix": "...", "suffix": "...", "n": 16}, ...]  -> "infill": ["text", ...]
//       "bench": {"prompt": "...", "n": 128, "repeat": 3, "threads": [1, 2]}}
//                                              -> "bench": {"tokens_per_s": {"1": [...], "2": [...]}, "prompt_tokens": k}
// Greedy decoding is llama.cpp's own (temperature 0), stopping early only at an end-of-generation token.
import fs from "node:fs";
import {getLlama, LlamaCompletion, LlamaLogLevel} from "node-llama-cpp";

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const logged = [];  // llama.cpp's log lines (its timings among them), kept off the terminal
const llama = await getLlama({gpu: false, build: "never", progressLogs: false,
                              logLevel: job.bench ? LlamaLogLevel.info : LlamaLogLevel.error,
                              logger: (level, message) => logged.push(message)});
const model = await llama.loadModel({modelPath: job.model});
const context = await model.createContext({contextSize: job.context ?? 256, threads: job.threads ?? 2,
                                           sequences: 1, batchSize: job.context ?? 256});
const out = {};

if (job.tokenize) out.tokens = job.tokenize.map((text) => Array.from(model.tokenize(text, true)));

async function greedy(promptTokens, n) {
    // a fresh sequence each time, so no state is shared between prompts
    const sequence = context.getSequence();
    const tokens = [];
    try {
        for await (const token of sequence.evaluate(promptTokens, {temperature: 0})) {
            if (model.isEogToken(token)) break;
            tokens.push(token);
            if (tokens.length >= n) break;
        }
    } finally {
        sequence.dispose();
    }
    return tokens;
}

if (job.greedy) {
    out.greedy = [];
    for (const {prompt, n} of job.greedy) {
        const tokens = await greedy(model.tokenize(prompt, false), n);
        out.greedy.push({tokens: tokens.map(Number), text: model.detokenize(tokens)});
    }
}

if (job.infill) {
    out.infill = [];
    for (const {prefix, suffix, n} of job.infill) {
        const sequence = context.getSequence();
        const completion = new LlamaCompletion({contextSequence: sequence});
        out.infill.push(await completion.generateInfillCompletion(prefix, suffix, {maxTokens: n, temperature: 0}));
        completion.dispose();
        sequence.dispose();
    }
}

if (job.bench) {
    // llama.cpp's own timing of its single-token decode calls (llama_perf_context_print's "eval time"), so the
    // binding's per-token cost in node is not counted against it; a fresh context per try, each thread count.
    const {prompt, n, repeat, threads} = job.bench;
    const promptTokens = model.tokenize(prompt, false);
    out.bench = {prompt_tokens: promptTokens.length, tokens_per_s: {}};
    for (const count of threads ?? [job.threads ?? 2]) {
        out.bench.tokens_per_s[count] = [];
        for (let r = 0; r < (repeat ?? 3); r++) {
            const timed = await model.createContext({contextSize: job.context ?? 256, threads: count, sequences: 1,
                                                     batchSize: job.context ?? 256, performanceTracking: true});
            const sequence = timed.getSequence();
            let made = 0;
            for await (const token of sequence.evaluate(promptTokens, {temperature: 0})) {
                void token;
                if (++made >= n) break;
            }
            logged.length = 0;
            await timed.printTimings();
            await new Promise((resolve) => setTimeout(resolve, 20));  // the log callback arrives on the next tick
            const line = logged.find((l) => /\beval time\s*=/.test(l) && !/prompt eval/.test(l));
            const match = line && line.match(/eval time\s*=\s*([\d.]+) ms \/\s*(\d+) runs/);
            if (!match) throw new Error(`no eval time in llama.cpp's timings: ${logged.join(" | ")}`);
            out.bench.tokens_per_s[count].push(Number(match[2]) / (Number(match[1]) / 1000));
            await timed.dispose();
        }
    }
}

process.stdout.write(JSON.stringify(out) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
