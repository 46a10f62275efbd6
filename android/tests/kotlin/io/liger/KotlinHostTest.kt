package io.liger

import kotlin.system.exitProcess
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking

/**
 * The Kotlin API (android/liger/src/main/kotlin) on the host JVM against the host JNI library:
 * sessions, generate() as a Flow (greedy tokens equal the fixture's reference) and its
 * cancellation, batched decode, state save / load, errors as exceptions, and — with a model
 * that has a tokenizer — chat templates and structured output. Run by tests/jni.rs:
 *
 *   KotlinHostTestKt MODEL PROMPT_IDS GREEDY_IDS [TOKENIZER_MODEL]
 */
private var failures = 0

private fun check(ok: Boolean, what: String) {
    if (!ok) {
        System.err.println("check failed: $what")
        failures++
    }
}

private inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit) {
    try {
        block()
        check(false, "$what: no exception")
    } catch (e: Throwable) {
        check(e is E && !e.message.isNullOrEmpty(), "$what: threw $e")
    }
}

private fun ids(text: String) = text.split(',').filter { it.isNotEmpty() }.map { it.toInt() }.toIntArray()

fun main(args: Array<String>) {
    val (path, prompt, greedy) = Triple(args[0], ids(args[1]), ids(args[2]))
    LigerModel(path, threads = 1, mode = DecodeMode.HF_COMPAT).use { model ->
        check(model.vocabSize > 0, "vocab size")
        model.newSession().use { s ->
            s.feed(prompt)
            check(s.position == prompt.size.toLong(), "position after the prompt")
            val saved = s.saveState()
            val tokens = runBlocking { s.generate(greedy.size, SamplerOptions.GREEDY).toList() }
            check(tokens.map { it.id } == greedy.toList(), "greedy tokens ${tokens.map { it.id }}")

            s.loadState(saved)
            val two = runBlocking { s.generate(greedy.size, SamplerOptions.GREEDY).take(2).toList() }
            check(two.map { it.id } == greedy.take(2), "first two tokens")

            // Two sessions decoded together equal each alone.
            s.loadState(saved)
            s.fork().use { f ->
                LigerSession.decodeTogether(listOf(s, f), intArrayOf(greedy[0], greedy[0]))
                check(s.logits().contentEquals(f.logits()), "batched sessions differ")
            }

            expectThrows<LigerException>("a token outside the vocabulary") { s.feed(intArrayOf(1 shl 30)) }
            expectThrows<LigerException>("a state of garbage") { s.loadState(byteArrayOf(1, 2, 3)) }
            expectThrows<LigerException>("a grammar without a tokenizer") { s.setGrammar(Grammar.regex("[0-9]+")) }
        }
        val closed = model.newSession()
        closed.close()
        expectThrows<IllegalStateException>("a closed session") { closed.feed(prompt) }
    }
    expectThrows<LigerException>("a missing file") { LigerModel("/nonexistent.gguf") }

    if (args.size > 3) {
        LigerModel(args[3], threads = 1, useMmap = false).use { model ->
            val text = model.applyChatTemplate(listOf(ChatMessage("user", "Hi!")))
            check(text.contains("Hi!"), "chat template: $text")
            check(model.stopIds.isNotEmpty(), "stop ids")
            model.newSession().use { s ->
                // Cancelling the collector stops generation after the current token (this
                // model takes milliseconds per token: the fixture's finishes before a cancel).
                s.feed("Once upon a time, in a land far away,", addSpecial = true)
                val start = s.position
                val three = runBlocking { s.generate(200, SamplerOptions()).take(3).toList() }
                check(three.size == 3, "three tokens, not ${three.size}")
                check(s.position - start < 50, "generation went on after cancel: ${s.position - start}")
                s.reset()
                s.feed(text, addSpecial = false)
                s.setGrammar(Grammar.regex("[0-9]{3}"))
                val digits = runBlocking { s.generateText(16, SamplerOptions.GREEDY).toList() }.joinToString("")
                check(digits.length == 3 && digits.all { it.isDigit() }, "regex output '$digits'")
                expectThrows<LigerException>("a bad schema") { s.setGrammar(Grammar.jsonSchema("{not json")) }
                s.setGrammar(null)
                // Stop strings cut the greedy text where one begins; logit bias bans and forces.
                s.reset()
                s.feed("The capital of Italy is", addSpecial = true)
                val start2 = s.saveState()
                val full = runBlocking { s.generateText(24, SamplerOptions.GREEDY).toList() }.joinToString("")
                check(full.length >= 8, "greedy text '$full'")
                val stop = full.substring(full.length / 2, full.length / 2 + 3)
                s.loadState(start2)
                s.setStopStrings(listOf("never in this text", stop))
                val cut = runBlocking { s.generateText(24, SamplerOptions.GREEDY).toList() }.joinToString("")
                check(cut == full.substring(0, full.indexOf(stop)), "stop '$stop': '$cut' of '$full'")
                s.setStopStrings(emptyList())
                expectThrows<LigerException>("an empty stop string") { s.setStopStrings(listOf("")) }
                s.loadState(start2)
                s.setLogitBias(mapOf(42 to 100f))
                val forced = runBlocking { s.generate(3, SamplerOptions.GREEDY).toList() }.map { it.id }
                check(forced == listOf(42, 42, 42), "logit bias +100 on 42: $forced")
                expectThrows<LigerException>("a bias outside the vocabulary") { s.setLogitBias(mapOf(1 shl 30 to 1f)) }
                s.setLogitBias(emptyMap())
            }
        }
    }
    if (failures > 0) {
        System.err.println("$failures checks failed")
        exitProcess(1)
    }
    println("kotlin: all checks passed")
}
