/**
 * `openshell-gateway`: gRPC + HTTP on one port; owns sandboxes, their
 * readiness and the relays to their supervisors.
 *
 * @module
 */
import { denoEnv, FlagError } from "../core/flags.ts";
import { errorMessage, Logger } from "../core/log.ts";
import { RotatingLogFile } from "../core/log_file.ts";
import { gatewayHelp, parseGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./server.ts";
import { readRelayTuning, type RelayTuning } from "./tuning.ts";

async function main(): Promise<number> {
  let parsed;
  let tuning: RelayTuning;
  try {
    parsed = parseGatewayConfig(Deno.args, denoEnv);
    tuning = readRelayTuning(denoEnv);
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`openshell-gateway: ${err.message}`);
      return 2;
    }
    throw err;
  }
  if (parsed.help) {
    console.log(gatewayHelp());
    return 0;
  }
  const config = parsed.config;
  let logFile: RotatingLogFile | undefined;
  if (config.logFile) {
    try {
      logFile = new RotatingLogFile({ path: config.logFile });
    } catch (err) {
      console.error(
        `openshell-gateway: cannot open --log-file ${config.logFile}: ${errorMessage(err)}`,
      );
      return 1;
    }
  }
  const log = new Logger({
    level: config.logLevel,
    format: config.logFormat,
    target: "gateway",
    ...(logFile ? { sink: (line: string) => logFile.write(line) } : {}),
  });
  // Signals are handled from the start: one that arrives while the driver
  // comes up cancels the start (and stops the driver) instead of orphaning it.
  const cancel = new AbortController();
  let gateway: Gateway | undefined;
  const onSignal = () => {
    if (gateway) gateway.stop();
    else cancel.abort();
  };
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    gateway = await startGateway(config, {
      log,
      signal: cancel.signal,
      unsafeKeepGoaway: denoEnv("OPENSHELL_UNSAFE_KEEP_GOAWAY") === "1",
      tuning,
    });
  } catch (err) {
    if (cancel.signal.aborted) {
      log.info("start cancelled by signal");
      return 0;
    }
    log.error(`cannot start: ${errorMessage(err)}`);
    return 1;
  }
  await gateway.stopped;
  Deno.removeSignalListener("SIGTERM", onSignal);
  Deno.removeSignalListener("SIGINT", onSignal);
  return 0;
}

Deno.exit(await main());
