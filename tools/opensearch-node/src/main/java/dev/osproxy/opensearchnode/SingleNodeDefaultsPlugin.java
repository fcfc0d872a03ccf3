package dev.osproxy.opensearchnode;

import java.util.Collection;
import java.util.List;

import org.opensearch.common.settings.Settings;
import org.opensearch.index.shard.IndexSettingProvider;
import org.opensearch.plugins.Plugin;

/**
 * Gives every new index {@code index.number_of_replicas: 0} unless its create request or a
 * matching template sets it, so indices go green on one node. Unlike a catch-all template (or the
 * {@code cluster.default_number_of_replicas} cluster setting, which only works once set through
 * the API) it is in force before HTTP opens and shows up in no template or settings listing.
 */
public final class SingleNodeDefaultsPlugin extends Plugin {
    private static final String REPLICAS = "index.number_of_replicas";

    @Override
    public Collection<IndexSettingProvider> getAdditionalIndexSettingProviders() {
        return List.of(new IndexSettingProvider() {
            @Override
            public Settings getAdditionalIndexSettings(String index, boolean dataStream, Settings templateAndRequest) {
                return templateAndRequest.hasValue(REPLICAS)
                        ? Settings.EMPTY
                        : Settings.builder().put(REPLICAS, 0).build();
            }
        });
    }
}
