"""prompt_enhancer: SmolLM2 rewrites the user's prompt (the prompt itself if the LM fails),
and names the camera move it asks for. It needs no motion, so motion_control runs it beside
motion_extractor; student_dit appends the motion context and makes the camera path."""

from models.prompt import PromptEnhancer
from serving.backend import TritonModel, text


class TritonPythonModel(TritonModel):
    name = "prompt_enhancer"

    def setup(self) -> None:
        self.enhancer = PromptEnhancer(self.model_dir / "smollm2.gguf",
                                       max_new_tokens=self.settings.serve.prompt_max_new_tokens,
                                       threads=self.settings.serve.torch_threads)

    def infer(self, inputs):
        rewritten = self.enhancer.rewrite(text(inputs["PROMPT"], "PROMPT"))
        return {"ENHANCED_PROMPT": rewritten.text, "CAMERA_MOVE": rewritten.camera_move,
                "PROMPT_SOURCE": rewritten.source}
