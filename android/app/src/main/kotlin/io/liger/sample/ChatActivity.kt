package io.liger.sample

import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import io.liger.ChatMessage
import io.liger.LigerException
import io.liger.LigerModel
import io.liger.LigerSession
import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * A chat screen. The model is `files/model.gguf` of the app (push one made by `liger convert`:
 * `adb push smollm2-liger.gguf /data/local/tmp/ && adb shell run-as io.liger.sample cp
 * /data/local/tmp/smollm2-liger.gguf files/model.gguf`). Turns are rendered by the file's own
 * chat template (`LigerModel.applyChatTemplate`); the session keeps the whole conversation in
 * its fixed-size state, so each turn feeds only the text the template adds after what was fed.
 */
class ChatActivity : AppCompatActivity() {
    private var model: LigerModel? = null
    private var session: LigerSession? = null
    private var answering: Job? = null
    private val messages = mutableListOf<ChatMessage>()
    /** The conversation's text the session has consumed. */
    private var fed = ""

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val transcript = TextView(this).apply { setPadding(24, 24, 24, 24) }
        val scroll = ScrollView(this).apply { addView(transcript) }
        val input = EditText(this).apply { hint = "Message" }
        val send = Button(this).apply { text = "Send" }
        val row = LinearLayout(this).apply {
            addView(input, LinearLayout.LayoutParams(0, -2, 1f))
            addView(send)
        }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(scroll, LinearLayout.LayoutParams(-1, 0, 1f))
            addView(row)
        })

        lifecycleScope.launch {
            transcript.text = "Loading the model…\n"
            try {
                val loaded = withContext(Dispatchers.IO) {
                    LigerModel(File(filesDir, "model.gguf").path)
                }
                model = loaded
                session = loaded.newSession()
                transcript.text = "liger ${LigerModel.version}: ready.\n"
            } catch (e: LigerException) {
                transcript.text = "Could not load files/model.gguf: ${e.message}\n"
            }
        }

        send.setOnClickListener {
            val s = session ?: return@setOnClickListener
            val message = input.text.toString().trim()
            if (message.isEmpty() || answering?.isActive == true) return@setOnClickListener
            input.text.clear()
            transcript.append("\nYou: $message\nModel: ")
            answering = lifecycleScope.launch {
                try {
                    val m = model ?: return@launch
                    messages += ChatMessage("user", message)
                    withContext(Dispatchers.Default) {
                        val text = m.applyChatTemplate(messages, addGenerationPrompt = true)
                        if (text.startsWith(fed)) {
                            s.feed(text.substring(fed.length))
                        } else {
                            s.reset() // the template rewrote earlier turns: feed it all
                            s.feed(text)
                        }
                        fed = text
                    }
                    val answer = StringBuilder()
                    s.generateText(maxTokens = 256).collect { piece ->
                        answer.append(piece)
                        transcript.append(piece)
                        scroll.post { scroll.fullScroll(ScrollView.FOCUS_DOWN) }
                    }
                    messages += ChatMessage("assistant", answer.toString())
                    fed += answer
                } catch (e: LigerException) {
                    transcript.append("\n[error: ${e.message}]")
                }
                transcript.append("\n")
            }
        }
    }

    override fun onDestroy() {
        answering?.cancel()
        session?.close()
        model?.close()
        super.onDestroy()
    }
}
