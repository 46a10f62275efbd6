package io.liger

import java.io.Closeable
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.isActive

/** Sampling settings; temperature <= 0 is greedy. */
data class SamplerOptions(
    val temperature: Float = 0.8f,
    val topK: Int = 40,
    val topP: Float = 0.95f,
    val minP: Float = 0.05f,
    val repeatPenalty: Float = 1.0f,
    val repeatLastN: Int = 64,
    val seed: Long = 0x5eed,
) {
    companion object {
        val GREEDY = SamplerOptions(temperature = 0f)
    }
}

/** A constraint on generated text (see [LigerSession.setGrammar]). */
class Grammar private constructor(internal val kind: String, internal val text: String?) {
    companion object {
        /** JSON that validates against the JSON schema `schema` (JSON text). */
        fun jsonSchema(schema: String) = Grammar("json_schema", schema)
        /** Any JSON object. */
        fun jsonObject() = Grammar("json_object", null)
        /** llguidance's Lark syntax (`start: ...`). */
        fun lark(grammar: String) = Grammar("lark", grammar)
        /** A regular expression the whole output matches. */
        fun regex(pattern: String) = Grammar("regex", pattern)
    }
}

/** A generated token and the text it completes (empty while a character is incomplete). */
data class Token(val id: Int, val text: String)

/**
 * One sequence on a model: its state has a fixed size whatever the number of tokens fed.
 * Calls on one session are serialized by the library; use one session per conversation.
 */
class LigerSession internal constructor(private var handle: Long) : Closeable {
    private fun live(): Long = handle.also { check(it != 0L) { "LigerSession is closed" } }

    /** Tokens fed so far. */
    val position: Long get() = LigerNative.sessionPosition(live())

    /** Feeds token ids as one call. */
    fun feed(ids: IntArray) = LigerNative.sessionFeed(live(), ids)

    /** Tokenizes and feeds text as one call. */
    fun feed(text: String, addSpecial: Boolean = false) =
        LigerNative.sessionFeedText(live(), text, addSpecial)

    /** Logits after the last token fed. */
    fun logits(): FloatArray = LigerNative.sessionLogits(live())

    fun reset() = LigerNative.sessionReset(live())

    /**
     * Structured output: every later [generate] writes only text of this grammar — a JSON
     * schema (`Grammar.jsonSchema(schemaJson)`), any JSON object, a Lark grammar or a regex.
     * A grammar the engine rejects throws [LigerException] and keeps the previous one; null
     * lifts the constraint.
     */
    fun setGrammar(grammar: Grammar?) =
        LigerNative.sessionSetGrammar(live(), grammar?.kind, grammar?.text)

    /**
     * Every later [generate] ends where its text reaches one of [stops] (matched across
     * tokens; text that may begin one is held back until it cannot). At most 16, each 1 to
     * 1024 bytes; an empty list removes them. A bad list throws [LigerException] and keeps the
     * previous one.
     */
    fun setStopStrings(stops: List<String>) =
        LigerNative.sessionSetStopStrings(live(), stops.toTypedArray())

    /**
     * Adds `bias[id]` to that token's logit before every later sample, as OpenAI's
     * `logit_bias`: -100 bans a token, +100 all but forces it. An id outside the vocabulary or
     * a bias that is not finite throws [LigerException]; an empty map removes the bias.
     */
    fun setLogitBias(bias: Map<Int, Float>) {
        val ids = bias.keys.toIntArray()
        LigerNative.sessionSetLogitBias(live(), ids, FloatArray(ids.size) { bias.getValue(ids[it]) })
    }

    /** The state as bytes (versioned, checksummed, bound to this model file). */
    fun saveState(): ByteArray = LigerNative.stateSave(live())

    /** Restores saved bytes; on error (another model, corrupt) the session is unchanged. */
    fun loadState(state: ByteArray) = LigerNative.stateLoad(live(), state)

    /** An independent session starting from this one's state. */
    fun fork(): LigerSession = LigerSession(LigerNative.sessionFork(live()))

    /**
     * Generation as a cold Flow: collecting it samples and feeds up to [maxTokens] tokens on
     * [Dispatchers.Default] until the model's stop token; cancelling the collector stops
     * generation after the current token.
     */
    fun generate(maxTokens: Int, options: SamplerOptions = SamplerOptions()): Flow<Token> {
        val session = live()
        return channelFlow {
            LigerNative.generate(
                session, options.temperature, options.topK, options.topP, options.minP,
                options.repeatPenalty, options.repeatLastN, options.seed, maxTokens,
            ) { id, text -> isActive && trySend(Token(id, text)).isSuccess }
        }.buffer(Channel.UNLIMITED).flowOn(Dispatchers.Default)
    }

    /** [generate] as text pieces. */
    fun generateText(maxTokens: Int, options: SamplerOptions = SamplerOptions()): Flow<String> =
        generate(maxTokens, options).map { it.text }

    companion object {
        /**
         * Feeds `tokens[i]` to `sessions[i]` in one batched step: several conversations
         * advance together, each weight read once for all of them. The sessions must be
         * distinct and of one model; on error none is fed.
         */
        fun decodeTogether(sessions: List<LigerSession>, tokens: IntArray) =
            LigerNative.sessionsDecode(sessions.map { it.live() }.toLongArray(), tokens)
    }

    @Synchronized
    override fun close() {
        if (handle != 0L) {
            LigerNative.sessionFree(handle)
            handle = 0L
        }
    }
}
