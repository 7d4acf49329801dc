/** The CLI suite (cli_suite.ts) over https with client certificates (mTLS), TLS failures included. */
import { cliSuite } from "./cli_suite.ts";

Deno.test("openshell CLI over https (mTLS) against a gateway with host supervisors", (t) =>
  cliSuite(t, "https"));
