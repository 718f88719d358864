import sys, time, types, os; sys.path.insert(0, os.getcwd()); sys.path.insert(1, os.path.join(os.getcwd(), ".tune_tmp/site"))
try:
    import ray
except ImportError:
    m = types.ModuleType("ray"); m.remote = lambda x: x; sys.modules["ray"] = m
import torch
from hydra import compose, initialize_config_dir
from miles_hydra.config import materialize, register_configs
from miles_hydra.engine.trainer import TrainerActor
from miles_hydra.engine.rollout import RolloutEngine, SamplingParams
from miles_hydra.engine.data import build_tokenizer, build_prompt_source
from miles_hydra.engine.reward import build_reward_fn
from miles_hydra.engine.driver_parts import decode_response
from miles_hydra.engine.train_batch import RolloutBatch
register_configs()
with initialize_config_dir(config_dir=os.path.join(os.getcwd(), "conf"), version_base="1.3"):
    cfg = materialize(compose("config", overrides=sys.argv[1:]))
t0=time.time()
tok = build_tokenizer(cfg.model); r=cfg.rollout
src = build_prompt_source(cfg.data, tok, cfg.seed, r.rollout_max_prompt_len, r.rollout_max_response_len)
rf = build_reward_fn(cfg.reward, cfg.data)
tr = TrainerActor(cfg, tok.pad_id, 2)
eng = RolloutEngine(cfg.model, cfg.speculative, cfg.precision, "cpu", 1, 64, 2)
def ev():
    eng.update_weights(tr.engine_state_dict())
    ps = src.eval_prompts()
    outs = eng.generate([p.ids for p in ps], SamplingParams(0.0, 1.0, -1, r.rollout_max_response_len, [tok.eos_id]))
    return sum(rf(p, decode_response(tok, o.response_ids)) for p,o in zip(ps,outs))/len(ps)
print("init", round(time.time()-t0,1), "eval0", ev())
t=time.time()
if cfg.data.warmup_sft_steps:
    m = tr.warmup_sft(src.sft_examples(cfg.data.warmup_sft_steps*r.samples_per_rollout), r.samples_per_rollout)
    print("sft", m, round(time.time()-t,1), "eval", ev())
import os
if os.environ.get("RL_LR"):
    lr=float(os.environ["RL_LR"])
    for g in tr.optimizer.param_groups: g["lr"]=g["initial_lr"]=lr
    tr.scheduler.base_lrs=[lr]
for i in range(r.num_rollout):
    t=time.time()
    eng.update_weights(tr.engine_state_dict())
    prompts = [p for p in src.next_batch(r.rollout_batch_size) for _ in range(r.n_samples_per_prompt)]
    outs = eng.generate([p.ids for p in prompts], SamplingParams(r.rollout_temperature, 1.0, -1, r.rollout_max_response_len, [tok.eos_id]))
    tg=time.time()-t
    rewards=[rf(p, decode_response(tok,o.response_ids)) for p,o in zip(prompts,outs)]
    b = RolloutBatch([p.ids for p in prompts],[o.response_ids for o in outs],[o.rollout_log_probs for o in outs],rewards,r.n_samples_per_prompt)
    m = tr.train(i, b)
    line = f"{i} reward {sum(rewards)/len(rewards):.3f} len {m['rollout/response_lengths']:.1f} gen {tg:.2f} train {time.time()-t-tg:.2f}"
    if (i+1) % (r.eval_interval or 5) == 0: line += f" eval {ev():.3f}"
    print(line, flush=True)
print("total", round(time.time()-t0,1))
