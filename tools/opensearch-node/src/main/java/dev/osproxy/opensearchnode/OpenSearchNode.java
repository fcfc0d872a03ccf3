package dev.osproxy.opensearchnode;

import java.lang.reflect.Constructor;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.opensearch.action.admin.cluster.health.ClusterHealthResponse;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.Version;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.PluginInfo;

/**
 * Runs one real single-node OpenSearch cluster (2.x or 3.x, whichever core is on the classpath)
 * in this JVM, with the standard modules loaded from the classpath (no distribution, no plugin
 * directories, no security manager).
 *
 * <p>Usage: {@code --http-port PORT --data DIR [--transport-port PORT] [--cluster-name NAME]
 * [--plugin CLASS]... [-E key=value]...}; {@code --plugin} adds a plugin class found on the
 * classpath (the security plugin, for {@code scripts/opensearch-node --security}).
 * Prints {@code opensearch-node ready http=127.0.0.1:PORT} on stdout once the node answers
 * requests; all logging goes to stderr. SIGTERM/SIGINT close the node and exit 0; startup
 * failures print {@code opensearch-node: failed to start: ...} on stderr and exit 1; bad
 * arguments exit 2.
 */
public final class OpenSearchNode {

    private static final String PROG = "opensearch-node";

    /**
     * The standard modules, by class name: 3.x renamed each plugin class to {@code *ModulePlugin};
     * the first name of each row that is on the classpath is loaded (percolator is not on Maven
     * Central for 3.x and is left out there).
     */
    static final List<List<String>> MODULES = List.of(
            List.of("org.opensearch.transport.Netty4ModulePlugin", "org.opensearch.transport.Netty4Plugin"),
            List.of("org.opensearch.index.reindex.ReindexModulePlugin", "org.opensearch.index.reindex.ReindexPlugin"),
            List.of("org.opensearch.painless.PainlessModulePlugin", "org.opensearch.painless.PainlessPlugin"),
            List.of("org.opensearch.analysis.common.CommonAnalysisModulePlugin",
                    "org.opensearch.analysis.common.CommonAnalysisPlugin"),
            List.of("org.opensearch.index.mapper.MapperExtrasModulePlugin",
                    "org.opensearch.index.mapper.MapperExtrasPlugin"),
            List.of("org.opensearch.join.ParentJoinModulePlugin", "org.opensearch.join.ParentJoinPlugin"),
            List.of("org.opensearch.percolator.PercolatorModulePlugin", "org.opensearch.percolator.PercolatorPlugin"),
            List.of("org.opensearch.script.mustache.MustacheModulePlugin", "org.opensearch.script.mustache.MustachePlugin"),
            List.of(SingleNodeDefaultsPlugin.class.getName())); // new indices default to 0 replicas

    private final Node node;
    private final AtomicBoolean closed = new AtomicBoolean();

    private OpenSearchNode(Node node) {
        this.node = node;
    }

    /**
     * A node with {@code plugins} loaded from the classpath, through Node's protected
     * constructor: it takes the plugin classes on 2.x and {@link PluginInfo}s naming them on 3.x.
     */
    private static OpenSearchNode of(Environment env, List<Class<? extends Plugin>> plugins) throws Exception {
        Constructor<Node> ctor = Node.class.getDeclaredConstructor(Environment.class, Collection.class, boolean.class);
        ctor.setAccessible(true);
        Type element = ((ParameterizedType) ctor.getGenericParameterTypes()[1]).getActualTypeArguments()[0];
        Collection<?> given = plugins;
        if (element == PluginInfo.class) {
            Constructor<PluginInfo> info = PluginInfo.class.getConstructor(String.class, String.class, String.class,
                    Version.class, String.class, String.class, List.class, boolean.class);
            List<PluginInfo> infos = new ArrayList<>();
            for (Class<? extends Plugin> p : plugins) {
                infos.add(info.newInstance(p.getName(), "classpath plugin", "NA", Version.CURRENT,
                        Runtime.version().feature() + "", p.getName(), List.of(), false));
            }
            given = infos;
        }
        return new OpenSearchNode(ctor.newInstance(env, given, true));
    }

    /** Closes the node once and waits for its thread pools; safe to call from several threads. */
    void closeAndWait() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            node.close();
            if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                System.err.println(PROG + ": node did not close within 30s");
            }
        } catch (Exception e) {
            System.err.println(PROG + ": error while closing node: " + e);
        }
    }

    public static void main(String[] argv) {
        Args args;
        try {
            args = Args.parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println(PROG + ": " + e.getMessage());
            System.err.println(Args.USAGE);
            System.exit(2);
            return;
        }

        // SIGTERM/SIGINT -> System.exit(0) -> the shutdown hook closes the node. Handling the
        // signals ourselves (instead of the JVM default) makes a requested stop exit 0, not 143.
        AtomicReference<OpenSearchNode> running = new AtomicReference<>();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            OpenSearchNode n = running.get();
            if (n != null) {
                n.closeAndWait();
            }
        }, PROG + "-shutdown"));
        Signals.onTermination(() -> System.exit(0));

        try {
            OpenSearchNode node = create(args);
            running.set(node);
            node.node.start();
            ClusterHealthResponse health = node.node.client().admin().cluster().prepareHealth()
                    .setWaitForYellowStatus()
                    .setTimeout(TimeValue.timeValueSeconds(60))
                    .get();
            if (health.isTimedOut()) {
                throw new IllegalStateException("cluster did not reach yellow within 60s (status "
                        + health.getStatus() + ")");
            }
        } catch (Throwable t) {
            System.err.println(PROG + ": failed to start: " + describe(t));
            System.exit(1); // the shutdown hook closes whatever was started
            return;
        }

        System.out.println(PROG + " ready http=127.0.0.1:" + args.httpPort);
        System.out.flush();
        while (true) { // the node's threads do the work; we only wait for a signal
            try {
                new CountDownLatch(1).await();
            } catch (InterruptedException ignored) {
                // keep waiting
            }
        }
    }

    private static OpenSearchNode create(Args args) throws Exception {
        Path home = args.data.toAbsolutePath();
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        String nodeName = "osproxy-node-" + args.httpPort;
        Settings settings = Settings.builder()
                .put("path.home", home.toString())
                .put("path.data", home.resolve("data").toString())
                .put("path.logs", home.resolve("logs").toString())
                .put("cluster.name", args.clusterName)
                .put("node.name", nodeName)
                .put("discovery.type", "single-node")
                .put("network.host", "127.0.0.1")
                .put("http.port", Integer.toString(args.httpPort))
                .put("transport.port", args.transportPort)
                .put("node.portsfile", true)
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                // A small heap with a non-G1 collector trips the real-memory breaker spuriously.
                .put("indices.breaker.total.use_real_memory", false)
                .put("node.processors", Math.min(2, Runtime.getRuntime().availableProcessors()))
                // Room for the 100 MiB bodies the streaming tests send through osproxy.
                .put("http.max_content_length", "256mb")
                .put("indexing_pressure.memory.limit", "60%")
                .put(args.extra)
                .build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(
                settings, Collections.emptyMap(), null, () -> nodeName);
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (List<String> names : MODULES) {
            for (String name : names) {
                Class<?> found;
                try {
                    found = Class.forName(name);
                } catch (ClassNotFoundException e) {
                    continue;
                }
                plugins.add(found.asSubclass(Plugin.class));
                break;
            }
        }
        for (String name : args.plugins) {
            plugins.add(Class.forName(name).asSubclass(Plugin.class));
        }
        return OpenSearchNode.of(env, plugins);
    }

    private static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder(String.valueOf(t));
        for (Throwable c = t.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            sb.append("; caused by: ").append(c);
        }
        return sb.toString();
    }

    /** Command-line arguments. */
    static final class Args {
        static final String USAGE = "usage: " + PROG
                + " --http-port PORT --data DIR [--transport-port PORT] [--cluster-name NAME] [--plugin CLASS]..."
                + " [-E key=value]...";

        int httpPort = -1;
        String transportPort = "0"; // 0 = an ephemeral port chosen by the OS at bind time
        Path data;
        String clusterName = "osproxy-test";
        /** Extra node settings, as with OpenSearch's own {@code -E key=value}. */
        Settings extra = Settings.EMPTY;
        /** Extra plugin classes to load from the classpath ({@code --plugin CLASS}). */
        List<String> plugins = new ArrayList<>();

        static Args parse(String[] argv) {
            Args a = new Args();
            for (int i = 0; i < argv.length; i++) {
                String flag = argv[i];
                if (flag.equals("-h") || flag.equals("--help")) {
                    System.out.println(USAGE);
                    System.exit(0);
                }
                if (i + 1 >= argv.length) {
                    throw new IllegalArgumentException("missing value for " + flag);
                }
                String v = argv[++i];
                switch (flag) {
                    case "-E": {
                        int eq = v.indexOf('=');
                        if (eq <= 0) throw new IllegalArgumentException("-E expects key=value, got '" + v + "'");
                        a.extra = Settings.builder().put(a.extra).put(v.substring(0, eq), v.substring(eq + 1)).build();
                        break;
                    }
                    case "--http-port": a.httpPort = port(flag, v, false); break;
                    case "--transport-port": a.transportPort = Integer.toString(port(flag, v, true)); break;
                    case "--data": a.data = Path.of(v); break;
                    case "--plugin": a.plugins.add(v); break;
                    case "--cluster-name":
                        if (v.isEmpty()) throw new IllegalArgumentException("empty --cluster-name");
                        a.clusterName = v;
                        break;
                    default: throw new IllegalArgumentException("unknown argument " + flag);
                }
            }
            if (a.httpPort < 0) throw new IllegalArgumentException("--http-port is required");
            if (a.data == null) throw new IllegalArgumentException("--data is required");
            return a;
        }

        private static int port(String flag, String v, boolean zeroOk) {
            int p;
            try {
                p = Integer.parseInt(v);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(flag + " must be a number, got '" + v + "'");
            }
            if (p > 65535 || p < (zeroOk ? 0 : 1)) {
                throw new IllegalArgumentException(flag + " out of range: " + p);
            }
            return p;
        }
    }
}
