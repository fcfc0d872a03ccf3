package dev.osproxy.opensearchnode;

import sun.misc.Signal;

/**
 * Handles SIGTERM/SIGINT ourselves (instead of the JVM default "run shutdown hooks, exit 143")
 * so that a requested stop closes the node cleanly and the process exits 0. A signal that the
 * parent left ignored (e.g. SIGINT for a background job of a non-interactive shell) stays ignored.
 */
final class Signals {
    private Signals() {}

    static void onTermination(Runnable action) {
        for (String name : new String[] {"TERM", "INT"}) {
            try {
                Signal.handle(new Signal(name), s -> action.run());
            } catch (IllegalArgumentException e) {
                // Signal not available (or reserved by -Xrs): the shutdown hook still closes the node.
            }
        }
    }
}
