/**
 * `@peculiar/x509`, loaded after the `reflect-metadata` polyfill it needs
 * and bound to WebCrypto. Import X.509 helpers from here, never from the
 * package directly.
 *
 * @module
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };
