/** The CLI suite (cli_suite.ts) over plaintext http. */
import { cliSuite } from "./cli_suite.ts";

Deno.test("openshell CLI over http against a gateway with host supervisors", (t) =>
  cliSuite(t, "http"));
