use super::*;

fn logits() -> Vec<f32> {
    vec![1.0, 3.0, 2.0, -1.0, 2.5]
}

#[test]
fn greedy_takes_argmax_and_reports_logprobs() {
    let mut s = Sampler::new(SamplingParams {
        n_probs: 3,
        ..SamplingParams::greedy()
    });
    let out = s.sample(Row::Full(&logits()), &[]);
    assert_eq!(out.id, 1);
    let lp = log_softmax(&logits());
    assert!((out.logprob - lp[1]).abs() < 1e-6);
    assert_eq!(out.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 4, 2]);
    let total: f32 = lp.iter().map(|v| v.exp()).sum();
    assert!((total - 1.0).abs() < 1e-5);
}

#[test]
fn same_seed_same_tokens_different_seed_differs() {
    let run = |seed| {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        });
        (0..64)
            .map(|_| s.sample(Row::Full(&logits()), &[]).id)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn top_k_one_is_greedy_and_top_k_limits_choices() {
    let mut s = Sampler::new(SamplingParams {
        temperature: 5.0,
        top_k: 2,
        top_p: 1.0,
        min_p: 0.0,
        seed: 1,
        ..Default::default()
    });
    for _ in 0..200 {
        let id = s.sample(Row::Full(&logits()), &[]).id;
        assert!(id == 1 || id == 4, "top-2 drew {id}");
    }
}

#[test]
fn top_p_and_min_p_cut_the_tail() {
    // probs ≈ [0.9, 0.09, 0.01]
    let l = vec![(0.9f32).ln(), (0.09f32).ln(), (0.01f32).ln()];
    for params in [
        SamplingParams {
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        },
        SamplingParams {
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        },
    ] {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            seed: 3,
            ..params
        });
        for _ in 0..200 {
            assert_eq!(s.sample(Row::Full(&l), &[]).id, 0);
        }
    }
    // min_p 0.05 keeps token 1 (0.09/0.9 = 0.1) but drops token 2.
    let mut s = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.05,
        seed: 4,
        ..Default::default()
    });
    let ids: Vec<u32> = (0..2000).map(|_| s.sample(Row::Full(&l), &[]).id).collect();
    assert!(ids.contains(&1) && !ids.contains(&2));
}

#[test]
fn sampling_frequencies_follow_the_distribution() {
    let l = vec![0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
    let mut s = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 9,
        ..Default::default()
    });
    let n = 20000;
    let ones = (0..n)
        .filter(|_| s.sample(Row::Full(&l), &[]).id == 1)
        .count();
    let frac = ones as f64 / n as f64;
    assert!((frac - 0.75).abs() < 0.02, "{frac}");
}

#[test]
fn penalties_follow_llama_cpp_rules() {
    let p = SamplingParams {
        repeat_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..SamplingParams::greedy()
    };
    let mut l = vec![4.0f32, -2.0, 1.0];
    apply_penalties(&mut l, &[0, 0, 1], &p);
    assert_eq!(l, vec![4.0 / 2.0 - 0.5 - 0.5, -2.0 * 2.0 - 0.25 - 0.5, 1.0]);
}

#[test]
fn invalid_parameters_are_rejected() {
    assert!(SamplingParams {
        temperature: -1.0,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(SamplingParams {
        top_p: 0.0,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(SamplingParams {
        min_p: 1.5,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(SamplingParams::default().validate().is_ok());
}

#[test]
fn fast_exp_and_log_sum_exp_match_f64() {
    let mut worst = 0f64;
    for i in 0..=20000 {
        let x = -87.0 * i as f32 / 20000.0;
        let want = (x as f64).exp();
        let got = crate::sampler::exp_neg(x) as f64;
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 3e-7, "relative error {worst}");
    let xs: Vec<f32> = (0..151_936)
        .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 12.0)
        .collect();
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let want = max + xs.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    let got = crate::sampler::log_sum_exp(&xs) as f64;
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
}

#[test]
fn top_k_selection_keeps_the_full_sorts_order_with_ties() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Logits on a coarse grid, so many tie; ties must go to the lower id.
    let logits: Vec<f32> = (0..5000)
        .map(|_| (rng.random_range(-40i32..40) as f32) * 0.25)
        .collect();
    let mut sorted: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
    for k in [1, 2, 40, 177, 4999, 5000, 9000] {
        let s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: k,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplingParams::default()
        });
        let ids: Vec<u32> = s
            .distribution(&Scored::Full(logits.as_slice().into()))
            .iter()
            .map(|c| c.0)
            .collect();
        let want: Vec<u32> = sorted.iter().take(k).map(|c| c.0).collect();
        assert_eq!(ids, want, "top_k {k}");
    }
}

/// A row summarised as a backend would: its k best candidates and its lse.
fn summarise(l: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32) {
    let top = top_by_logit(l, k);
    (
        top.iter().map(|c| c.0).collect(),
        top.iter().map(|c| c.1).collect(),
        log_sum_exp(l),
    )
}

#[test]
fn summarised_rows_choose_and_report_as_full_rows_do() {
    let mut rng = crate::rng::XorShift::from_state(0x2545_f491_4f6c_dd1d);
    let mut next = || (rng.next().expect("endless") % 10_000) as f32 / 1000.0 - 5.0;
    // Ties on purpose: every logit rounded to a tenth.
    let l: Vec<f32> = (0..5000).map(|_| (next() * 10.0).round() / 10.0).collect();
    for params in [
        SamplingParams {
            n_probs: 5,
            ..SamplingParams::greedy()
        },
        SamplingParams {
            n_probs: 3,
            seed: 7,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_k: 12,
            top_p: 0.6,
            min_p: 0.0,
            temperature: 1.3,
            seed: 9,
            ..SamplingParams::default()
        },
    ] {
        let (mut full, mut top) = (Sampler::new(params.clone()), Sampler::new(params));
        let Readout::Top(k) = top.readout() else {
            panic!("these settings need only candidates")
        };
        let (ids, values, lse) = summarise(&l, k);
        let row = Row::Top(TopRow {
            ids: &ids,
            values: &values,
            lse,
            drawn: None,
        });
        for _ in 0..200 {
            let (a, b) = (full.sample(Row::Full(&l), &[]), top.sample(row, &[]));
            assert_eq!(a.id, b.id);
            assert!((a.logprob - b.logprob).abs() < 1e-6);
            assert_eq!(a.top, b.top);
            if full.params.temperature > 0.0 {
                let (sa, sb) = (full.score(Row::Full(&l), &[]), top.score(row, &[]));
                assert_eq!(full.distribution(&sa), top.distribution(&sb));
            }
        }
    }
}

#[test]
fn readout_asks_for_full_rows_where_candidates_do_not_decide() {
    let s = |p: SamplingParams| Sampler::new(p).readout();
    assert_eq!(s(SamplingParams::greedy()), Readout::Top(1));
    let probs = SamplingParams {
        n_probs: 20,
        ..SamplingParams::greedy()
    };
    assert_eq!(s(probs), Readout::Top(20));
    assert_eq!(s(SamplingParams::default()), Readout::Top(40));
    let no_top_k = SamplingParams {
        top_k: 0,
        ..SamplingParams::default()
    };
    assert_eq!(s(no_top_k), Readout::Full);
    let penalised = SamplingParams {
        presence_penalty: 0.5,
        ..SamplingParams::greedy()
    };
    assert_eq!(s(penalised), Readout::Full);
    let wide = SamplingParams {
        top_k: MAX_TOP_K + 1,
        ..SamplingParams::default()
    };
    assert_eq!(s(wide), Readout::Full);
}

#[test]
fn an_untruncated_draw_uses_the_whole_softmax_at_its_temperature() {
    let s = Sampler::new(SamplingParams {
        temperature: 0.7,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..Default::default()
    });
    let l = logits();
    let dist = s.distribution(&Scored::Full(l.as_slice().into()));
    let z: f64 = l.iter().map(|&v| (v as f64 / 0.7).exp()).sum();
    assert_eq!(dist.len(), l.len());
    for (i, &(id, p)) in dist.iter().enumerate() {
        assert_eq!(id as usize, i, "id order");
        let want = (l[i] as f64 / 0.7).exp() / z;
        assert!((p as f64 - want).abs() < 1e-6, "{p} vs {want}");
    }
}

#[test]
fn top_by_logit_equals_a_full_sorts_first_n_on_either_path() {
    let mut rng = crate::rng::XorShift::from_state(0x9e37_79b9_7f4a_7c15);
    // Ties on purpose (logits rounded to a tenth), and ascending runs, the
    // scan's worst case.
    let mut l: Vec<f32> = (0..3000)
        .map(|_| ((rng.next().expect("endless") % 200) as f32 / 10.0).round())
        .collect();
    l.extend((0..500).map(|i| i as f32 / 7.0));
    let mut sorted: Vec<(u32, f32)> = l.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for n in [1, 2, 5, 40, FEW, FEW + 1, 300, l.len(), l.len() + 3] {
        assert_eq!(top_by_logit(&l, n), sorted[..n.min(l.len())], "n = {n}");
    }
    assert!(top_by_logit(&l, 0).is_empty());
}
