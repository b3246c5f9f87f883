"""prompt_enhancer: SmolLM2 rewrites the prompt with the motion context (plain fallback if
the LM fails); the camera move the prompt names becomes a per-frame camera path."""

from models.prompt import PromptEnhancer, camera_path
from serving.backend import TritonModel, scalar, text


class TritonPythonModel(TritonModel):
    name = "prompt_enhancer"

    def setup(self) -> None:
        self.enhancer = PromptEnhancer(self.model_dir / "smollm2.gguf",
                                       max_new_tokens=self.settings.serve.prompt_max_new_tokens,
                                       threads=self.settings.serve.torch_threads)

    def infer(self, inputs):
        enhanced = self.enhancer.enhance(text(inputs["PROMPT"], "PROMPT"),
                                         text(inputs["ACTION_PHRASE"], "ACTION_PHRASE"),
                                         float(scalar(inputs["MOTION_INTENSITY"])))
        return {"CAPTION": enhanced.text, "PROMPT_SOURCE": enhanced.source,
                "CAMERA": camera_path(enhanced.camera_move, int(scalar(inputs["FRAMES"])))}
