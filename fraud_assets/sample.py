"""Deterministic demo dataset: labelled SMS/chat messages as "daily export" files.

Everything here is synthetic, written for this project from templates with slot
filling (names, amounts, banks, links, codes...). It exists so that a fresh
checkout has something realistic to drop into the landing folder: mostly
Chinese (about 75 %) with some English, 15-25 % fraud, time-of-day / weekday /
seasonal patterns that differ by class (so the time features have something to
learn), hard negatives (genuine bank, delivery and verification-code notices
that read like fraud), fraud dressed as those notices, late-night "are you
there?" openers whose text is the same as a friend's (only the hour gives them
away, so a text-only baseline misses them), 1 % flipped labels, a few exact duplicates across files (re-sent marketing), one JSON Lines
file and one file with offset-aware timestamps (to exercise multi-format ingest).

The same seed always gives byte-identical files; dates are fixed (the last
export is 2026-11-15), never relative to today.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
from datetime import date, datetime, timedelta
from pathlib import Path

END_DATE = date(2026, 11, 15)  # date of the last daily export
WINDOW_DAYS = 45  # each export holds the messages of the previous ~45 days
SPAN_DAYS = 365  # all exports together cover about one year
ZH_SHARE = 0.75
FIELDS = ("message_id", "text", "label", "sent_at", "fraud_type")

# ---- slot vocabularies -------------------------------------------------------
_ZH = {
    "surname": "张王李刘陈杨赵黄周吴徐孙马朱胡郭何林罗高",
    "given": ["伟", "芳", "娜", "洋", "杰", "静", "磊", "敏", "涛", "婷", "强", "丽", "军", "霞", "鹏", "晨"],
    "title": ["总", "局", "经理", "处长", "主任", "老师"],
    "bank": ["工商银行", "建设银行", "农业银行", "中国银行", "招商银行", "交通银行", "邮储银行", "平安银行"],
    "express": ["顺丰速运", "中通快递", "圆通速递", "韵达快递", "京东物流", "邮政EMS"],
    "op": ["中国移动", "中国联通", "中国电信"],
    "shop": ["淘宝", "京东", "拼多多", "美团", "唯品会", "抖音商城"],
    "city": ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆"],
    "product": ["羽绒服", "蓝牙耳机", "儿童奶粉", "空气炸锅", "运动鞋", "护肤套装", "手机壳", "电动牙刷"],
    "app": ["微信", "支付宝", "京东金融", "美团"],
}
_EN = {
    "name": ["Emma", "Jack", "Olivia", "Noah", "Sophie", "Liam", "Grace", "Tom", "Chloe", "Ben"],
    "bank": ["Barclays", "HSBC", "Chase", "Lloyds", "Westpac", "ANZ", "Santander"],
    "courier": ["Royal Mail", "DHL", "FedEx", "UPS", "Evri", "USPS"],
    "op": ["Vodafone", "EE", "T-Mobile", "O2", "Verizon"],
    "shop": ["Amazon", "ASOS", "Tesco", "eBay", "Argos", "Boots"],
    "city": ["London", "Leeds", "Sydney", "Boston", "Manchester", "Denver"],
    "coin": ["BTC", "ETH", "USDT", "SOL"],
}
_URL_OK = ["t.cn/", "dwz.cn/", "u.jd.com/", "m.tb.cn/h.", "10086.cn/s/", "amzn.to/", "bit.ly/", "royalmail.com/t/"]
_URL_BAD = [
    "t.cn/",
    "bit.ly/",
    "kf-tuikuan.top/",
    "yd-loan.cc/",
    "icbc-vip.xyz/",
    "gov-jc.info/",
    "parcel-redeliver.co/",
    "secure-bank-verify.com/",
    "cn-pay.icu/",
]
_ALNUM = string.ascii_letters + string.digits


class _Slots(dict):
    """Fills ``{slot}`` fields on demand; a slot repeated in one template keeps its value."""

    def __init__(self, rng: random.Random, ts: datetime, fraud: bool):
        super().__init__()
        self.rng, self.ts, self.fraud = rng, ts, fraud

    def __missing__(self, key: str) -> str:
        r, ts = self.rng, self.ts
        d = lambda n: "".join(r.choice(string.digits) for _ in range(n))  # noqa: E731
        later = lambda: ts + timedelta(days=r.randint(1, 10))  # noqa: E731
        makers = {
            "name": lambda: r.choice(_ZH["surname"]) + r.choice(_ZH["given"]) + r.choice(["", *_ZH["given"]]),
            "boss": lambda: r.choice(_ZH["surname"]) + r.choice(_ZH["title"]),
            "opener": lambda: r.choice(_OPENER_TAILS_ZH),
            "en_opener": lambda: r.choice(_OPENER_TAILS_EN),
            "amt_s": lambda: f"{r.uniform(3, 2999):.2f}",
            "amt": lambda: str(r.choice([r.randint(3, 200) * 1000, r.randint(3000, 99999)])),
            "bal": lambda: f"{r.uniform(100, 60000):.2f}",
            "card4": lambda: d(4),
            "code": lambda: d(6),
            "phone": lambda: "1" + r.choice("356789") + d(9),
            "hotline": lambda: r.choice(["400-", "95"]) + d(3) + "-" + d(4),
            "url": lambda: (
                "https://"
                + r.choice(_URL_BAD if self.fraud else _URL_OK)
                + "".join(r.choice(_ALNUM) for _ in range(r.randint(5, 8)))
            ),
            "md": lambda: f"{ts.month}月{ts.day}日",
            "hm": lambda: ts.strftime("%H:%M"),
            "ddl": lambda: (lambda x: f"{x.month}月{x.day}日")(later()),
            "en_date": lambda: later().strftime("%d/%m"),
            "wx": lambda: r.choice(["wx", "vip", "kf", "a"]) + "".join(r.choice(_ALNUM) for _ in range(6)),
            "qq": lambda: str(r.randint(10**7, 10**10)),
            "n": lambda: str(r.randint(2, 9)),
            "pct": lambda: str(r.choice([8, 12, 15, 20, 30, 50])),
            "track": lambda: r.choice(["SF", "YT", "ZT", "JD", "RM", "1Z"]) + d(12),
            "case": lambda: f"({ts.year}){r.choice('沪京粤浙川')}刑字第{d(5)}号",
            "en_name": lambda: r.choice(_EN["name"]),
            "cur": lambda: r.choice(["£", "$"]),
            "en_amt_s": lambda: f"{self['cur']}{r.uniform(2, 900):.2f}",
            "en_amt": lambda: f"{self['cur']}{r.randint(2, 60) * 250:,}",
            "en_phone": lambda: r.choice(["07", "+44 7", "+1 415 "]) + d(9 if r.random() < 0.5 else 7),
        }
        if key in makers:
            value = makers[key]()
        else:  # list vocabularies: {bank}, {shop}, {en_bank}, {en_courier}...
            lang, _, field = key.rpartition("_")
            value = r.choice((_EN if lang == "en" else _ZH)[field])
        self[key] = value
        return value


# ---- templates -----------------------------------------------------------------
# Normal messages deliberately mention money, links, accounts and codes too, so
# that "contains a URL / an amount" alone does not separate the classes.
_NORMAL_ZH = [
    "【{bank}】您尾号{card4}的储蓄卡{md}{hm}支出(消费){amt_s}元，余额{bal}元。",
    "【{bank}】您尾号{card4}的账户{md}{hm}收入(转账){amt_s}元，余额{bal}元。",
    "【{bank}】您的信用卡本期账单{amt_s}元，最后还款日{ddl}，可通过手机银行还款。如已还款请忽略。",
    "【{bank}】温馨提示：银行工作人员不会向您索要验证码，请勿向任何人透露。客服{hotline}",
    "【{express}】您的快递{track}已到{city}驿站，取件码{n}-{card4}，请于{ddl}前取件。",
    "【{express}】您的包裹{track}正在派送中，快递员{name}，电话{phone}，请保持电话畅通。",
    "【{express}】您购买的{product}已签收，如有疑问请查看{url}",
    "【{op}】尊敬的客户，您本月套餐已使用流量{n}.{n}GB，剩余话费{amt_s}元。详情{url}",
    "【{op}】截至{md}{hm}，您的话费余额为{n}.{n}元，为避免停机请及时充值。",
    "【{op}】您已于{md}成功办理{n}9元5G畅享套餐，次月生效，如需退订请回复TD。",
    "【{app}】验证码{code}，用于登录，5分钟内有效。请勿泄露给他人。",
    "【{shop}】您的验证码为{code}，如非本人操作请忽略本短信。",
    "【{bank}】验证码：{code}，您正在进行尾号{card4}卡的网上支付，金额{amt_s}元，切勿告知他人。",
    "【{shop}】您的退款{amt_s}元已原路退回，预计1-3个工作日到账，无需任何额外操作。",
    "【{shop}】双11狂欢季，满300减50，{product}低至5折！{url} 拒收请回复R",
    "【{shop}】亲，您关注的{product}降价啦，限时特价，点击{url}查看。退订回T",
    "【{city}地铁】{md}起部分线路调整运营时间，请合理安排出行。",
    "【{city}社保】{name}您好，您的社保卡已制卡完成，请于{ddl}后携带身份证到网点领取。",
    "{name}，明天上午十点的会议改到3楼会议室，记得带材料。",
    "{name}，晚上{n}点一起吃饭吗？我在{city}路口那家火锅店等你",
    "妈，我到{city}了，一切都好，{ddl}回家，晚点给你打电话。",
    "收到，谢谢{boss}！材料{ddl}前发您邮箱",
    "房租{amt_s}元已经转给你了，查收一下",
    "【{city}12345】您反映的问题已受理，工单号{card4}{code}，我们将在{ddl}前答复。",
    "【物业通知】{md}9:00-17:00小区停水检修，请提前储水，\n给您带来不便敬请谅解。",
    "【{bank}】“{name}”向您转账{amt_s}元，已入账，附言：还你的饭钱",
]
_NORMAL_EN = [
    "{en_bank}: A payment of {en_amt_s} was made with card ending {card4} on {en_date}. Not you? Call the number on the back of your card.",
    "{en_bank}: Your statement is ready. Minimum payment {en_amt_s} due {en_date}.",
    "Your {en_bank} security code is {code}. We will never ask you for this code.",
    "{en_courier}: your parcel {track} is out for delivery today. Track: {url}",
    "{en_courier}: we delivered your parcel to your safe place at {hm}.",
    "Your {en_shop} order has shipped and will arrive {en_date}. Track it at {url}",
    "{en_shop}: Your refund of {en_amt_s} has been processed to your original payment method.",
    "Use {code} to verify your {en_op} account. Don't share it.",
    "{en_op}: you have used 80% of your data allowance. Add-ons at {url}",
    "{en_shop} Black Friday: 30% off everything this weekend only! {url} Reply STOP to opt out",
    "Hi {en_name}, running 10 min late, see you at the cafe",
    "Thanks for the dinner last night, I sent you {en_amt_s} for my half",
    'Reminder: your "dental check-up" appointment is on {en_date} at {hm}. Reply C to cancel.',
]
_FRAUD_ZH = {
    "impersonate_police": [
        "我是{city}市公安局民警，你名下的银行卡涉嫌洗钱案，案件编号{case}，请立即配合调查，不得告诉任何人。",
        "【{city}检察院】您涉嫌一起非法集资案件，请于今日内登录{url}查看通缉令并进行资金清查。",
        "您好，这里是{city}公安分局，您的身份证被他人冒用开户，需将资金转入安全账户核查，联系{phone}",
        "法院传票：您有一张传票未领取，案号{case}，逾期将强制执行，详询{phone}",
    ],
    "refund_scam": [
        "您好，我是{shop}客服，您购买的{product}因质量问题需要召回，我们将双倍退款{amt_s}元，请加微信{wx}办理。",
        "【{express}】您的快递在运输中丢失，我司将赔付{amt_s}元，请点击{url}填写银行卡信息领取理赔。",
        "亲，您购买的{product}订单异常，退款需开通“极速退款”服务，请打开{app}备用金按提示操作。",
        "{shop}客服：您误开通了会员服务，每月将自动扣费{amt_s}元，如需取消请联系{phone}",
    ],
    "loan_scam": [
        "【{bank}】尊敬的客户，您已获得无抵押贷款额度{amt}元，年底放款，低息秒批，详询{phone}",
        "无需征信，身份证即可贷，最高{amt}元当天到账，点击{url}申请。",
        "您的贷款已审批通过，因银行卡号填写错误资金被冻结，需缴纳解冻金{amt_s}元。",
        "您的信用卡额度可提升至{amt}元，加QQ{qq}办理，内部渠道。",
        "过年缺钱？网贷逾期也能下款，{url}",
    ],
    "fake_boss_friend": [
        "在吗？我是{boss}，这是我的新微信，有急事找你。",
        "我是{boss}，明天到我办公室来一趟，先加一下这个QQ：{qq}",
        "小{name}，我在开会不方便接电话，马上帮我给这个账户转{amt}元，回头还你。",
        "我是你{name}叔，手机丢了换了号，急用钱，能先借我{amt_s}吗？",
        "是我，换号了，加我微信{wx}",
    ],
    "investment_scam": [
        "内部消息，明天这只股票必涨停！加群{qq}，老师免费带单。",
        "数字货币稳赚不赔，日收益{pct}%，导师一对一指导，注册{url}",
        "恭喜您被选为VIP会员，投资{amt_s}元即可每日返利{pct}%，名额有限。",
        "{name}，我在这个平台投资赚了不少，你也试试{url}，邀请码{code}",
    ],
    "part_time_job": [
        "招聘兼职刷单，一单一结，日赚{n}00元，在家就能做，加微信{wx}",
        "手机点赞关注即可赚钱，每单佣金{amt_s}元，暑假学生可做，联系{qq}",
        "【招聘】{shop}急招线上客服，无需经验，日结工资，先交培训费{amt_s}元。",
        "在家兼职打字员，时间自由，月入过万，{url}",
        "点赞一单3元，加V{wx}",
    ],
}
_FRAUD_EN = {
    "impersonate_police": [
        "This is the {en_city} Police Fraud Unit. Your bank account is linked to a money laundering case. Call {en_phone} now.",
        "Final notice: an arrest warrant has been issued in your name. Settle at {url} within 24h.",
    ],
    "refund_scam": [
        "{en_shop}: you are owed a refund of {en_amt_s}. Claim here: {url}",
        "{en_courier}: your parcel could not be delivered, pay a {en_amt_s} redelivery fee at {url}",
        "Tax refund of {en_amt_s} pending. Confirm your bank details at {url}",
    ],
    "loan_scam": [
        "Pre-approved loan of {en_amt} with no credit check! Apply today: {url}",
        "{en_bank}: your loan is approved, pay a {en_amt_s} processing fee to release funds.",
    ],
    "fake_boss_friend": [
        "Hi mum, I dropped my phone, this is my new number. Can you text me on WhatsApp?",
        "Hi dad it's me, new phone. Need {en_amt_s} for rent today, can you help?",
        "It's {en_name}, I'm in a meeting. Can you buy 5 gift cards for a client and send me the codes?",
        "Hey it's me, new number",
    ],
    "investment_scam": [
        "Turn {en_amt_s} into {en_amt} in 7 days with our {en_coin} trading bot. Join: {url}",
        "Exclusive {en_coin} presale, {pct}% daily returns guaranteed. Limited spots: {url}",
    ],
    "part_time_job": [
        "Hello, we saw your CV. Remote job, earn {en_amt_s} per day liking videos. WhatsApp {en_phone}",
        "Part-time job: review {en_shop} products from home, up to {en_amt_s} paid daily. Reply YES to start.",
    ],
}
# Genuine messages that read like fraud: anti-fraud warnings, real security,
# delivery-compensation and loan notices, a friend who really changed number.
# They share the scammers' vocabulary (安全账户, 转账, 验证码, 冻结, 贷款, 理赔),
# so no single word separates the classes and the demo is not trivially easy.
_HARD_NORMAL_ZH = [
    "【{city}公安反诈】公安机关不会通过电话要求您把资金转入“安全账户”，接到此类电话请立即挂断并拨打96110。",
    "【{bank}】您的账户因连续输错密码已临时冻结，请本人携带身份证到任一网点解冻，工作人员不会索要验证码。",
    "【{express}】很抱歉您的快递{track}在运输中破损，理赔款{amt_s}元已退至您的付款账户，无需提供银行卡信息。",
    "【{bank}】您申请的个人消费贷款{amt}元已审批通过并发放至尾号{card4}账户，请按时还款。",
    "【{app}】您正在修改登录密码，验证码{code}，如非本人操作请立即冻结账户。",
    "【{shop}】您的订单{track}退款申请已通过，{amt_s}元将原路退回，客服不会要求您开通任何借款服务。",
    "{name}，我手机丢了，这是我新号码，存一下哈，周末还去不去{city}？",
    "{boss}让你把上个月的报销单据今天下班前交到财务，别忘了签字。",
    "上次借你的{amt_s}元我转你微信了，谢谢啦",
]
_HARD_NORMAL_EN = [
    "{en_bank}: we will never ask you to move money to a safe account. If someone does, hang up and call us.",
    "{en_courier}: sorry, your parcel {track} was damaged. A refund of {en_amt_s} is on its way to your card.",
    "Hi mum, new number, my old phone broke. Save this one! See you Sunday",
    "{en_bank}: your loan of {en_amt} has been paid into your account ending {card4}.",
]
# Fraud dressed as the genuine notices and chat above: the bank's format with a
# scammer's number, a friend's casual tone.
_SUBTLE_FRAUD_ZH = {
    "refund_scam": ["【{express}】您的快递{track}在运输中破损，理赔款{amt_s}元待领取，请联系客服{phone}登记银行卡。"],
    "impersonate_police": ["【{bank}】您尾号{card4}的账户涉嫌异常交易已被冻结，请致电{phone}配合核实，以免影响使用。"],
    "fake_boss_friend": ["{name}，我手机丢了，这是我新号码，有点急事，方便先转我{amt_s}吗，明天还你"],
    "loan_scam": ["【{bank}】您申请的贷款{amt}元已审批通过，因账户信息有误暂未发放，请联系{phone}处理。"],
}
_SUBTLE_FRAUD_EN = {
    "fake_boss_friend": ["Hi mum, new number, my old phone broke. Can you send {en_amt_s} for a bill? I'll pay you back"],
    "refund_scam": ["{en_courier}: sorry, your parcel {track} was damaged. Claim your {en_amt_s} refund at {url}"],
}
# Openers: the first message of a fake-friend scam reads like any friend's "are you there?"; the
# same templates are sent by friends. Nothing in the text tells them apart; the hour does (the
# scammers' openers come late at night). A text-only model cannot catch these, nor one that adds
# the hour to what the words say; one that reads the words at their hour can (the linear part's
# word x time-of-day crosses): the demo shows what the time features add.
_OPENER_ZH = [
    "{name}，在吗？{opener}",
    "在吗{name}？{opener}",
    "{name}，睡了吗？{opener}",
    "{name}，{opener}",
]
_OPENER_EN = ["Hey {en_name}, are you up? {en_opener}", "{en_name}? {en_opener}", "Hi {en_name}, {en_opener}"]
_OPENER_TAILS_ZH = ["有点事想问你", "方便说话吗", "有空吗", "想跟你说个事", "在忙吗", "回我一下", "看到回个消息", "有事找你"]
_OPENER_TAILS_EN = ["got a minute?", "can you talk?", "need to ask you something", "text me back", "are you free?"]
OPENER_SHARE_FRAUD = 0.12  # of fraud messages: a late-night opener
OPENER_SHARE_NORMAL = 0.04  # of normal messages: the same openers, at ordinary hours
HARD_SHARE = 0.25  # of normal messages drawn from the hard negatives
SUBTLE_SHARE = 0.25  # of fraud messages (of the types above) dressed as normal ones
LABEL_NOISE = 0.01  # share of labels flipped, as in any hand-labelled export

# Fixed texts re-sent verbatim: exact duplicates across files, as in real exports.
_RESENT = [
    "【京东】11.11全球热爱季，爆款低至5折，戳 https://u.jd.com/Xy7kQ2 抢购，回T退订",
    "【中国移动】尊敬的客户，您本月的话费账单已出，详情请登录中国移动APP查询。",
    "【美团】送您一张满30减8元外卖红包，今日有效，打开美团APP即可使用。",
    "Tesco Clubcard: your vouchers are ready to spend! Details: https://bit.ly/3TcVou",
]
_RESENT_FRAUD = [("refund_scam", "您的ETC已失效，请点击 https://etc-renew.top/a8 重新认证，逾期将停用。")]

# ---- timing ----------------------------------------------------------------------
# Weights per hour 0..23. Normal traffic is business-hours heavy; fraud peaks in
# the evening and keeps going at night, when victims are tired and banks closed.
_HOURS_NORMAL = [0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 3, 6, 6, 6, 4, 5, 6, 6, 6, 5, 3, 2, 1.5, 1, 0.7, 0.4]
_HOURS_FRAUD = [2, 1.5, 1, 0.6, 0.5, 0.6, 1, 1.5, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3.5, 5, 6, 6, 5, 3.5]
_HOURS_OPENER = [6, 6, 6, 5, 4, 2, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1, 3, 5]
_BASE = {
    "impersonate_police": 1.0,
    "refund_scam": 1.2,
    "loan_scam": 1.0,
    "fake_boss_friend": 1.0,
    "investment_scam": 1.0,
    "part_time_job": 1.2,
}


def _campaign(fraud_type: str, day: date) -> float:
    """Seasonal multiplier: refund scams ride shopping festivals (11.11, 6.18, 12.12),
    loan scams the cash squeeze before Spring Festival, job scams the summer break."""
    m, d = day.month, day.day
    if fraud_type == "refund_scam":
        return 4.0 if (m == 11 and d <= 20) else 2.5 if (m == 6 and d <= 20) else 1.5 if m == 12 else 1.0
    if fraud_type == "loan_scam":
        return 3.0 if m in (1, 2) else 2.0 if (m == 12 and d >= 15) else 1.0
    if fraud_type == "part_time_job":
        return 3.0 if m in (6, 7, 8) else 1.0
    return 1.0


def _day_weight(day: date, fraud: bool) -> float:
    weekend = day.weekday() >= 5
    if not fraud:
        return 0.45 if weekend else 1.0
    season = sum(w * _campaign(t, day) for t, w in _BASE.items()) / sum(_BASE.values())
    return (1.6 if weekend else 1.0) * season


def _message(rng: random.Random, days: list[date], fraud: bool) -> tuple[datetime, str, str]:
    """One (sent_at, text, fraud_type) triple; fraud_type is "" for normal messages."""
    day = rng.choices(days, weights=[_day_weight(x, fraud) for x in days])[0]
    opener = rng.random() < (OPENER_SHARE_FRAUD if fraud else OPENER_SHARE_NORMAL)
    hours = _HOURS_OPENER if (opener and fraud) else _HOURS_FRAUD if fraud else _HOURS_NORMAL
    hour = rng.choices(range(24), weights=hours)[0]
    ts = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60))
    zh = rng.random() < ZH_SHARE
    if opener:
        text = rng.choice(_OPENER_ZH if zh else _OPENER_EN).format_map(_Slots(rng, ts, fraud))
        return ts, text, "fake_boss_friend" if fraud else ""
    if not fraud:
        if rng.random() < 0.02:
            pool = [t for t in _RESENT if (any("\u4e00" <= c <= "\u9fff" for c in t)) == zh]
            return ts, rng.choice(pool), ""
        hard = rng.random() < HARD_SHARE
        pool = (_HARD_NORMAL_ZH if zh else _HARD_NORMAL_EN) if hard else (_NORMAL_ZH if zh else _NORMAL_EN)
        return ts, rng.choice(pool).format_map(_Slots(rng, ts, False)), ""
    if zh and rng.random() < 0.02:
        ftype, text = rng.choice(_RESENT_FRAUD)
        return ts, text, ftype
    types = list(_BASE)
    ftype = rng.choices(types, weights=[_BASE[t] * _campaign(t, day) for t in types])[0]
    subtle = (_SUBTLE_FRAUD_ZH if zh else _SUBTLE_FRAUD_EN).get(ftype)
    pool = subtle if subtle and rng.random() < SUBTLE_SHARE else (_FRAUD_ZH if zh else _FRAUD_EN)[ftype]
    return ts, rng.choice(pool).format_map(_Slots(rng, ts, True)), ftype


def _export_dates(n_files: int) -> list[date]:
    step = (SPAN_DAYS - WINDOW_DAYS) // max(n_files - 1, 1)
    return [END_DATE - timedelta(days=(n_files - 1 - i) * step) for i in range(n_files)]


def _rows(seed: int, index: int, export: date, n: int, offset_ts: bool) -> list[dict[str, str]]:
    rng = random.Random(seed * 1_000_003 + index)
    days = [export - timedelta(days=k) for k in range(WINDOW_DAYS, 0, -1)]
    n_fraud = round(n * rng.uniform(0.17, 0.23))  # keeps every file inside 15-25 %
    flags = [True] * n_fraud + [False] * (n - n_fraud)
    msgs = sorted((*_message(rng, days, f), f) for f in flags)  # a daily export is chronological
    rows = []
    for i, (ts, text, ftype, fraud) in enumerate(msgs):
        if rng.random() < LABEL_NOISE:  # a mislabelled row; a "fraud" label still names a type
            fraud, ftype = (not fraud), ("" if fraud else rng.choice(list(_BASE)))
        sent = ts.isoformat() + "+08:00" if offset_ts else ts.strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            {
                "message_id": f"f{index}-{i:06d}",
                "text": text,
                "label": "defraud" if fraud else "normal",
                "sent_at": sent,
                "fraud_type": ftype,
            }
        )
    return rows


def _encode(rows: list[dict[str, str]], jsonl: bool) -> bytes:
    if jsonl:
        lines = [json.dumps({**r, "fraud_type": r["fraud_type"] or None}, ensure_ascii=False) for r in rows]
        return ("\n".join(lines) + "\n").encode("utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> None:
    """Publish atomically (a watcher never sees half a file); skipped when the bytes are
    already there, so re-running keeps mtimes stable."""
    from fraud_assets.storage import Storage

    storage = Storage(path.parent)
    if storage.exists(path) and storage.read_bytes(path) == data:
        return
    storage.write_bytes(data, path)


def write_sample(landing_dir: Path, *, seed: int = 7, n_files: int = 8, messages_per_file: int = 400) -> list[Path]:
    """Write the synthetic demo dataset into ``landing_dir``; return the file paths, sorted.

    Files are daily exports ``messages_YYYY-MM-DD.{csv,jsonl}`` (the last dated
    2026-11-15), each holding ``messages_per_file`` messages sent in the 45 days
    before its date, columns :data:`FIELDS`. With two files or more, the
    second-to-last is JSON Lines; with three or more, the second one writes
    ``sent_at`` with an explicit ``+08:00`` offset (the others are naive local
    time, to be read as Asia/Shanghai). Same seed, same bytes.
    """
    if n_files < 1 or messages_per_file < 1:
        raise ValueError("n_files and messages_per_file must be positive")
    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    jsonl_index = n_files - 2 if n_files >= 2 else -1
    offset_index = 1 if n_files >= 3 else -1
    paths = []
    for i, export in enumerate(_export_dates(n_files)):
        jsonl = i == jsonl_index
        path = landing_dir / f"messages_{export.isoformat()}.{'jsonl' if jsonl else 'csv'}"
        _write_if_changed(path, _encode(_rows(seed, i, export, messages_per_file, i == offset_index), jsonl))
        paths.append(path)
    return sorted(paths)
