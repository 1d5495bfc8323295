"""The dataset layer: labelled face images (UTKFace folders and archives, labelled CSVs such as FairFace's) into a
manifest with splits and exclusions; tf.data and TFRecords; synthetic faces; data inspection (``inspect``)."""
