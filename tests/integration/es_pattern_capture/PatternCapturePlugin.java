package gatewatch.testplugin;

import java.io.IOException;
import java.util.Map;
import java.util.regex.Pattern;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

/**
 * The analysis parts the {@code .security} index's {@code email} analyzer names:
 * the {@code uax_url_email} tokenizer and the {@code pattern_capture} and {@code unique} filters.
 *
 * <p>Elasticsearch ships them in its {@code analysis-common} module, which the integ-test
 * distribution on Maven Central leaves out; without them the security index cannot be
 * created, and without it no API key. The first two wrap the same Lucene classes as the
 * module; {@code unique} keeps the first of each term, as the module's does by default.
 */
public final class PatternCapturePlugin extends Plugin implements AnalysisPlugin {
    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of("uax_url_email", (indexSettings, environment, name, settings) ->
            TokenizerFactory.newFactory(name, UAX29URLEmailTokenizer::new));
    }

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
            "pattern_capture", (indexSettings, environment, name, settings) -> {
                Pattern[] patterns = settings.getAsList("patterns").stream().map(Pattern::compile).toArray(Pattern[]::new);
                boolean preserveOriginal = settings.getAsBoolean("preserve_original", true);
                return new AbstractTokenFilterFactory(name) {
                    @Override
                    public TokenStream create(TokenStream input) {
                        return new PatternCaptureGroupTokenFilter(input, preserveOriginal, patterns);
                    }
                };
            },
            "unique", (indexSettings, environment, name, settings) -> new AbstractTokenFilterFactory(name) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new UniqueFilter(input);
                }
            });
    }

    private static final class UniqueFilter extends TokenFilter {
        private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
        private final CharArraySet seen = new CharArraySet(8, false);

        UniqueFilter(TokenStream input) {
            super(input);
        }

        @Override
        public boolean incrementToken() throws IOException {
            while (input.incrementToken()) {
                if (!seen.contains(term.buffer(), 0, term.length())) {
                    seen.add(term.toString());
                    return true;
                }
            }
            return false;
        }

        @Override
        public void reset() throws IOException {
            super.reset();
            seen.clear();
        }
    }
}
