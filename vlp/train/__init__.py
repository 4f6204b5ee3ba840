"""Training: VLP's command line, DDP (explicit ranks or torchrun), torch.amp, exact resume.

    from vlp.train.main import main
    main(["--output_dir", "runs/cc", "--bert_model", BERT, "--src_file", "dataset_cc.json",
          "--features", "regions.lmdb", "--do_train", "--s2s_prob", "0.75", "--bi_prob", "0.25"])
"""
