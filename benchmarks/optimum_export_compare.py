"""optimum-onnx's exporter and quantizer on the same truncated SmolLM2 (layer 7), for comparison.

optimum-onnx pins transformers < 4.58, so this runs in its own virtual environment:

    python -m venv /tmp/optvenv && . /tmp/optvenv/bin/activate
    pip install torch==2.13.0 "optimum-onnx[onnxruntime]" "transformers<4.58"
    HF_HUB_OFFLINE=1 python benchmarks/optimum_export_compare.py

It needs the SmolLM2 safetensors cache that `prefill-router train --encoder smollm2` writes under
~/.cache/litellm-prefill-router/encoders/. Prints JSON: export time, max |onnx - torch| of the
last hidden state over real tokens, and the same after optimum's dynamic int8 (avx2, per-tensor).
"""
import time, json, os, glob, numpy as np, torch
from transformers import AutoModel, AutoTokenizer
src=glob.glob("/root/.cache/litellm-prefill-router/encoders/smollm2-*")[0]
from transformers import PreTrainedTokenizerFast
tok=PreTrainedTokenizerFast(tokenizer_file=src+"/tokenizer.json", pad_token="<|im_end|>", eos_token="<|im_end|>", bos_token="<|im_start|>")
m=AutoModel.from_pretrained(src, torch_dtype=torch.float32).eval()
m.layers=m.layers[:7]; m.config.num_hidden_layers=7
out="/tmp/optimum-cmp/smol7"; m.save_pretrained(out); tok.save_pretrained(out)
from optimum.exporters.onnx import main_export
t=time.time(); main_export(out, output="/tmp/optimum-cmp/opt7", task="feature-extraction", no_post_process=True); t_exp=time.time()-t
prompts=["What is the capital of France?", "Solve for x: 2x + 3 = 11. Show your work step by step please.", "hello", "Write a python function that reverses a string"]*2
enc=tok(prompts, return_tensors="pt", padding=True)
with torch.no_grad(): ref=m(**enc).last_hidden_state.numpy()
import onnxruntime as ort
res={"optimum_export_seconds": t_exp}
for name in ["model.onnx"]:
    s=ort.InferenceSession(f"/tmp/optimum-cmp/opt7/{name}", providers=["CPUExecutionProvider"])
    feeds={i.name: enc[i.name].numpy() for i in s.get_inputs() if i.name in enc}
    if "position_ids" in [i.name for i in s.get_inputs()]:
        feeds["position_ids"]=np.cumsum(enc["attention_mask"].numpy(),1)-1
    o=s.run(None, feeds)[0]
    mask=enc["attention_mask"].numpy().astype(bool)
    res["optimum_max_abs_diff_last_hidden"]=float(np.abs(o-ref)[mask].max())
    res["ref_max_abs"]=float(np.abs(ref[mask]).max())
    res["inputs"]=[i.name for i in s.get_inputs()]
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
q=ORTQuantizer.from_pretrained("/tmp/optimum-cmp/opt7", file_name="model.onnx")
t=time.time(); q.quantize(save_dir="/tmp/optimum-cmp/opt7q", quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=False)); res["optimum_quantize_seconds"]=time.time()-t
s=ort.InferenceSession(glob.glob("/tmp/optimum-cmp/opt7q/*.onnx")[0], providers=["CPUExecutionProvider"])
o=s.run(None, feeds)[0]
res["optimum_int8_max_abs_diff"]=float(np.abs(o-ref)[mask].max()); res["optimum_int8_mean_rel"]=float((np.abs(o-ref)[mask]/(np.abs(ref[mask])+1)).mean())
print(json.dumps(res, indent=1))
